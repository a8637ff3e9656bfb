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

    @torch.no_grad()
    def update(self, active: bool = True) -> None:
        """Average one step; before ``ema_start`` (``active=False``) copy the weights instead."""
        weight = 1.0 - self.decay if active else 1.0
        torch._foreach_lerp_(self._dst, self._src, weight)
        for d, s in zip(self._dst_buf, self._src_buf, strict=True):
            d.copy_(s)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)
