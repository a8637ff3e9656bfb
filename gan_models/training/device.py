"""Where and how the trainer computes: the device, deterministic kernels, autocast."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from gan_models.errors import ConfigError
from gan_models.utils.determinism import pinned_threads


def select_device(name: str) -> torch.device:
    if name != "auto":
        if name == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device: cuda was asked for but no CUDA device is available")
        if name == "mps" and not torch.backends.mps.is_available():
            raise ConfigError("train.device: mps was asked for but MPS is not available")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Bit-exact kernels while training; the process-wide flags are restored afterwards."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    if enabled and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = not enabled and device.type == "cuda"
    try:
        with pinned_threads(enabled and device.type == "cpu"):  # CPU sums split by threads
            yield
    finally:
        torch.use_deterministic_algorithms(prev[0])
        torch.backends.cudnn.benchmark = prev[1]


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
