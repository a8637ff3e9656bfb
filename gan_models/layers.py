"""Small building blocks shared by several families."""

from __future__ import annotations

from torch import nn


def maybe_sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap a layer in spectral normalisation (Miyato et al. 2018) when enabled."""
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


def norm2d(kind: str, channels: int) -> nn.Module:
    """Discriminator normalisation: batch, layer (over C, H, W, as WGAN-GP advises) or none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()
