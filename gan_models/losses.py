"""Adversarial objectives and regularisers shared by the families.

Each objective maps discriminator logits to a scalar loss; the families combine them with their
own networks. Reduction is the mean over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gan_models.utils.batch_shard import draw


def d_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    """Discriminator/critic loss from logits on real and fake batches, each (B,)."""
    if kind == "nonsaturating":  # Goodfellow et al. 2014, log D form
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":  # Lim & Ye 2017; Miyato et al. 2018
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "wasserstein":  # Arjovsky et al. 2017
        return fake.mean() - real.mean()
    if kind == "lsgan":  # Mao et al. 2017, a=0, b=c=1
        return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())
    raise ValueError(f"unknown loss type {kind!r}")


def g_loss(kind: str, fake: Tensor) -> Tensor:
    """Generator loss from the discriminator's logits on a fake batch (B,)."""
    if kind == "nonsaturating":
        return F.softplus(-fake).mean()
    if kind in ("hinge", "wasserstein"):
        return -fake.mean()
    if kind == "lsgan":
        return 0.5 * (fake - 1).pow(2).mean()
    raise ValueError(f"unknown loss type {kind!r}")


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad critic(x_hat)||_2 - 1)^2] on interpolates."""
    ones = [1] * (real.dim() - 1)
    # drawn for the global batch and sliced in a data-parallel run (gan_models.utils.batch_shard)
    eps = draw(lambda m: torch.rand(m, *ones, device=real.device), real.shape[0])  # (B, 1, 1, 1)
    x_hat = (eps * real.float() + (1 - eps) * fake.float()).requires_grad_(True)
    with torch.autocast(real.device.type, enabled=False):
        out = critic(x_hat).float()
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def r1_penalty(critic: Callable[[Tensor], Tensor], real: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): E[||grad D(x)||^2] on real data; the caller scales by gamma/2."""
    x = real.detach().float().requires_grad_(True)
    with torch.autocast(real.device.type, enabled=False):
        out = critic(x).float()
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()
