"""What a deterministic CPU run pins, in one place, and what its results still depend on.

PyTorch's CPU kernels split their work (and so their floating-point sums) by the number of
intra-op threads, so the same seed gives other weights with 1 thread than with 2. Deterministic
runs (training with ``train.deterministic``, on by default on CPU, and the domain classifier)
therefore use ``DETERMINISTIC_THREADS`` threads whatever the host's core count or
``OMP_NUM_THREADS`` says. What cannot be pinned from inside the process: the CPU's instruction
set (ATen and oneDNN pick AVX-512 or AVX2 kernels by what the CPU has; ``ATEN_CPU_CAPABILITY``
and ``ONEDNN_MAX_CPU_ISA`` lower it only when set before torch starts) and the torch build.
:func:`lineage` records all of it; docs/reproducibility.md has the measurements.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

# Two: the core count of the machines the demo targets, so pinning costs nothing there.
DETERMINISTIC_THREADS = 2


@contextlib.contextmanager
def pinned_threads(enabled: bool = True) -> Iterator[int]:
    """Use ``DETERMINISTIC_THREADS`` intra-op threads inside the block when ``enabled``; the
    previous count is restored afterwards. Yields the count in use."""
    previous = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(DETERMINISTIC_THREADS)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def lineage() -> dict[str, Any]:
    """What a CPU result depends on beyond its inputs and params: the thread count in use, the
    kernels' instruction set and the torch build."""
    return {
        "intra_op_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
        "torch": torch.__version__,
    }
