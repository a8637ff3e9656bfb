"""Image grids: images in [-1, 1] (or uint8) (N, C, H, W) tiled into one PNG, written atomically.

``make_grid`` / ``save_grid_png`` are the project's one way to turn a batch of images into a
picture: training sample grids, ``ganops sample`` and evaluation figures all go through here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan_models.errors import DataError
from gan_models.utils.io import atomic_path

# Generators with tanh outputs may overshoot [-1, 1] by float rounding only; anything beyond this
# slack means the caller passed another range (0..1, 0..255 as float), which would skew every metric.
RANGE_SLACK = 1e-3

ArrayLike = np.ndarray | torch.Tensor


def as_images(x: ArrayLike, *, what: str = "images") -> torch.Tensor:
    """Return ``x`` as a float32 CPU tensor in [-1, 1] of shape (N, C, H, W).

    Raises :class:`DataError` for another rank, an empty batch, or float values outside [-1, 1].
    """
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x.detach()
    if t.ndim != 4:
        raise DataError(f"{what} must have shape (N, C, H, W), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise DataError(f"{what} holds no images")
    if t.dtype == torch.uint8:
        return t.cpu().to(torch.float32) / 127.5 - 1.0
    if not t.is_floating_point():
        raise DataError(f"{what} must be float in [-1, 1] or uint8 in 0..255, got {t.dtype}")
    t = t.cpu().to(torch.float32)
    lo, hi = float(t.min()), float(t.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"{what} hold NaN or infinite values")
    if lo < -1.0 - RANGE_SLACK or hi > 1.0 + RANGE_SLACK:
        raise DataError(
            f"{what} must lie in [-1, 1] (generator output / processed data), "
            f"got values in [{lo:.4g}, {hi:.4g}]"
        )
    # Clamp only when needed, and out of place: ``t`` may share memory with the caller's array.
    return t.clamp(-1.0, 1.0) if lo < -1.0 or hi > 1.0 else t


def to_uint8(x: ArrayLike) -> np.ndarray:
    """Quantise [-1, 1] images to uint8 0..255 with rounding, shape kept (N, C, H, W)."""
    t = as_images(x)
    return ((t + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).numpy()


def make_grid(
    images: ArrayLike, nrow: int = 8, *, padding: int = 2, pad_value: int = 255
) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] (or uint8) into one uint8 picture (H', W', C).

    ``nrow`` images go in each row (torchvision's convention); ``padding`` pixels of
    ``pad_value`` separate and surround the tiles. C is 1 or 3 and is kept.
    """
    x = to_uint8(images)  # (N, C, H, W) uint8
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise DataError(f"a grid needs 1- or 3-channel images, got {c} channels")
    if nrow < 1:
        raise DataError(f"nrow must be >= 1, got {nrow}")
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = np.full(
        (rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value, np.uint8
    )
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[top : top + h, left : left + w] = x[i].transpose(1, 2, 0)  # (H, W, C)
    return grid


def save_png(picture: np.ndarray, path: str | os.PathLike) -> Path:
    path = Path(path)
    pic = picture[:, :, 0] if picture.shape[2] == 1 else picture  # PIL wants (H, W) for grey
    with atomic_path(path) as tmp:
        Image.fromarray(pic).save(tmp, format="PNG")
    return path


def save_grid_png(
    images: ArrayLike, path: str | os.PathLike, nrow: int = 8, *, padding: int = 2, scale: int = 1
) -> Path:
    """Write :func:`make_grid` of ``images`` to ``path`` as PNG, atomically; return the path.

    ``scale`` enlarges the picture (nearest neighbour) so that small images are easy to see.
    """
    grid = make_grid(images, nrow, padding=padding)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return save_png(grid, path)


def interleave_pairs(inputs: ArrayLike, outputs: ArrayLike) -> torch.Tensor:
    """Inputs next to their outputs, for grids of image-to-image generators: (2N, C, H, W).

    Row-major order input_0, output_0, input_1, ...; a grid with an even ``nrow`` then shows
    each pair side by side. Inputs are brought to the outputs' size by nearest-neighbour
    upsampling (a low-res input keeps its pixels visible) and grey ones to their channels.
    """
    x, y = as_images(inputs, what="inputs"), as_images(outputs, what="outputs")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{x.shape[0]} inputs for {y.shape[0]} outputs")
    if x.shape[-2:] != y.shape[-2:]:
        x = torch.nn.functional.interpolate(x, size=y.shape[-2:], mode="nearest-exact")
    c = max(x.shape[1], y.shape[1])
    x, y = x.expand(-1, c, -1, -1), y.expand(-1, c, -1, -1)  # grey (C=1) broadcast to RGB
    return torch.stack([x, y], 1).reshape(-1, c, *y.shape[-2:])  # (2N, C, H, W)
