"""Generating from networks: seeded latents and batched, eval-mode generation on CPU outputs.

Used by the trainer (sample grids, FID during training), ``RunGenerator``, evaluation, the
explorer's export and the MLflow model: latents come from a private CPU generator, so a seed
gives the same images on every device and run.
"""

from __future__ import annotations

import torch

from gan_models.families.base import DataSpec, Family, Nets
from gan_models.training.params import TrainParams


def sample_latents(n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """Latents from a private CPU generator: the same seed gives the same z on every device."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))  # (n, Z)


@torch.no_grad()
def generate_from_latents(
    family: Family,
    nets: Nets,
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Images (n, C, H, W) in [-1, 1] on CPU for latents ``z`` (n, Z), networks in eval mode."""
    device = next(next(iter(nets.values())).parameters()).device
    was_training = {k: m.training for k, m in nets.items()}
    for m in nets.values():
        m.eval()
    try:
        chunks = []
        for i in range(0, z.shape[0], batch_size):
            y = labels[i : i + batch_size].to(device) if labels is not None else None
            chunks.append(family.generate(nets, z[i : i + batch_size].to(device), y).float().cpu())
    finally:
        for k, m in nets.items():
            m.train(was_training[k])
    return torch.cat(chunks).clamp_(-1, 1)


def generate_images(
    family: Family,
    nets: Nets,
    params: TrainParams,
    spec: DataSpec,
    n: int,
    seed: int,
    labels: torch.Tensor | None = None,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n images (n, C, H, W) in [-1, 1] on CPU; conditional families get labels 0..K-1 cycled."""
    z = sample_latents(n, params.model.latent_dim, seed)
    if family.conditional and labels is None:
        assert spec.num_classes
        labels = torch.arange(n) % spec.num_classes
    return generate_from_latents(family, nets, z, labels, batch_size), labels
