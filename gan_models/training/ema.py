"""Exponential moving average of network weights (Karras et al. 2018; Yazici et al. 2019)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, an averaged copy of ``net``; buffers (BN statistics) are copied."""

    def __init__(self, net: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)
        self._src = [p for p in net.parameters()]
        self._dst = [p for p in self.shadow.parameters()]
        self._src_buf = [b for b in net.buffers()]
        self._dst_buf = [b for b in self.shadow.buffers()]

    def decay_at(self, updates: int) -> float:
        """Warm-up: ``min(decay, (1 + k) / (10 + k))`` after k averaged updates, so the average
        forgets the random initial weights within a few hundred steps instead of thousands."""
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, updates: int | None) -> None:
        """Average one step (``updates`` averaged before it); ``None`` copies the weights
        instead (before ``train.ema_start``)."""
        weight = 1.0 if updates is None else 1.0 - self.decay_at(updates)
        torch._foreach_lerp_(self._dst, self._src, weight)
        for d, s in zip(self._dst_buf, self._src_buf, strict=True):
            d.copy_(s)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)
