"""What a deterministic CPU run pins, in one place, and what its results still depend on.

PyTorch's CPU kernels split their work (and so their floating-point sums) by the number of
intra-op threads, so the same seed gives other weights with 1 thread than with 2. Deterministic
runs (training with ``train.deterministic``, on by default on CPU, the domain classifier and
evaluation on CPU) therefore use ``DETERMINISTIC_THREADS`` threads whatever the host's core count or
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
from threadpoolctl import threadpool_limits

# One: the only count every host gives without oversubscribing its cores (tuning workers and
# tests run several one-thread processes side by side). docs/reproducibility.md has the cost;
# train.deterministic: false lifts the pin.
DETERMINISTIC_THREADS = 1


@contextlib.contextmanager
def pinned_threads(enabled: bool = True) -> Iterator[int]:
    """Use ``DETERMINISTIC_THREADS`` intra-op threads (torch, and numpy's BLAS) inside the block
    when ``enabled``; the previous counts are restored afterwards. Yields the torch count."""
    previous = torch.get_num_threads()
    try:
        # numpy's BLAS (covariances, distances in the metrics) splits its sums too
        limits = threadpool_limits(DETERMINISTIC_THREADS, user_api="blas") if enabled else None
        with limits or contextlib.nullcontext():
            if enabled:
                torch.set_num_threads(DETERMINISTIC_THREADS)
            yield torch.get_num_threads()
    finally:
        # last: restoring an OpenMP-built BLAS can reset the OpenMP thread count torch uses
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
