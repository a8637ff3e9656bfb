"""Classical augmentation, the baseline a practitioner tries first: per image, a random crop
(translation by up to ``crop`` pixels, as pad-and-crop), a small rotation and zoom, and a
horizontal flip where it makes sense. One affine resampling per image (bilinear, edges
repeated so the background stays the background), drawn from a seeded generator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gan_models.augment.config import ClassicalParams


def affine_params(
    n: int, size: int, p: ClassicalParams, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta (n, 2, 3), shift_px (n, 2)) for ``F.affine_grid``; the shifts in whole pixels."""
    u = torch.rand(n, 4, generator=gen)  # rotation, zoom, flip, spare
    angle = (2 * u[:, 0] - 1) * math.radians(p.rotate)
    zoom = 1 + (2 * u[:, 1] - 1) * p.scale
    flip = torch.where((u[:, 2] < 0.5) & p.flip, -1.0, 1.0)
    shift = torch.randint(-p.crop, p.crop + 1, (n, 2), generator=gen).float()  # (n, [x, y])
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    # The grid samples the input at theta @ (x, y, 1): a shift of +t pixels in the output reads
    # the input t pixels to the left (normalised coordinates span 2 over the image).
    theta[:, :, 2] = -2 * shift / size
    return theta, shift


def augment_batch(x: torch.Tensor, p: ClassicalParams, gen: torch.Generator) -> torch.Tensor:
    """Images (B, C, H, W) in [-1, 1] -> the same batch, each image randomly transformed."""
    b, _, h, w = x.shape
    theta, _ = affine_params(b, w, p, gen)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
