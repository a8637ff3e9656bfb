"""Speed profiles: ``train.profile: exact`` (fp32, bit-exact resume on CPU) or ``fast``.

``fast`` turns on what pays on the device it runs on, as measured on a bare DCGAN-64 loop:

- CPUs: channels_last, and leaving deterministic mode (its single pinned thread). bf16 autocast
  is not turned on: on this project's AVX-512 BF16 machines with torch 2.13 it was 0.9x fp32 for
  DCGAN-64 (channels_last alone 1.2x; docs/benchmarks.md), and ``torch.compile`` added nothing.
  An explicit ``train.amp: bf16`` is kept.
- CUDA: bf16 autocast, TF32 matmuls and convolutions, ``cudnn.benchmark`` and fused Adam.
- Anything else (MPS, CPUs without bf16): nothing changes.

Results under ``fast`` differ from ``exact`` (lower-precision arithmetic); a fast run still
resumes, but not bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


def cpu_has_bf16() -> bool:
    """True when this CPU runs bf16 arithmetic natively (AVX-512 with BF16, or AMX)."""
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return False
    return cap in ("AVX512", "AVX512_BF16", "AMX", "AVX512_AMX")


@dataclass(frozen=True)
class Profile:
    """What a profile switches on for one device."""

    name: str
    amp: str  # "none", "bf16" or "fp16": the autocast the trainer uses
    channels_last: bool = False
    tf32: bool = False
    cudnn_benchmark: bool = False
    fused_optimizer: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare(self, nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
        """Networks in the profile's memory format (in place; returned for chaining)."""
        if self.channels_last:
            for m in nets.values():
                m.to(memory_format=torch.channels_last)
        return nets

    def optimizer_kwargs(self, weights: list[torch.Tensor]) -> dict:
        """Extra keyword arguments for Adam/RMSprop over ``weights``."""
        if self.fused_optimizer and weights and all(w.is_cuda for w in weights):
            return {"fused": True}
        return {}

    @contextlib.contextmanager
    def flags(self) -> Iterator[None]:
        """Process-wide backend flags while training; restored afterwards."""
        prev = (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark,
        )
        if self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.cudnn_benchmark and not torch.are_deterministic_algorithms_enabled():
            torch.backends.cudnn.benchmark = True
        try:
            yield
        finally:
            (
                torch.backends.cuda.matmul.allow_tf32,
                torch.backends.cudnn.allow_tf32,
                torch.backends.cudnn.benchmark,
            ) = prev


def resolve_profile(name: str, amp: str, device: torch.device) -> Profile:
    """The settings of profile ``name`` on ``device``; an explicit ``train.amp`` is kept."""
    if name != "fast":
        return Profile(name, amp)
    if device.type == "cuda":
        return Profile(
            name,
            "bf16" if amp == "none" else amp,
            channels_last=False,
            tf32=True,
            cudnn_benchmark=True,
            fused_optimizer=True,
        )
    if device.type == "cpu":
        return Profile(name, amp, channels_last=True)
    return Profile(name, amp)
