"""Image grids: float images in [-1, 1] (N, C, H, W) to a PNG, written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from gan_models.utils.io import atomic_path


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """[-1, 1] floats (N, C, H, W) -> uint8 (N, H, W, C)."""
    x = torch.as_tensor(images).detach().float().cpu()
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (N, C, H, W)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(
    images: torch.Tensor | np.ndarray, nrow: int | None = None, pad: int = 2
) -> np.ndarray:
    """Tile images into one uint8 (H, W, C) array, ``nrow`` images per row, ``pad`` px apart."""
    x = to_uint8(images)  # (N, H, W, C)
    n, h, w, c = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    out = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        out[y0 : y0 + h, x0 : x0 + w] = x[i]
    return out


def save_grid(
    images: torch.Tensor | np.ndarray, path: str | Path, nrow: int | None = None, scale: int = 1
) -> Path:
    """Write a PNG grid atomically; ``scale`` enlarges small images (nearest) for viewing."""
    from PIL import Image

    grid = make_grid(images, nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
