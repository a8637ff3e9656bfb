"""Image grids and figures for runs and evaluations, written atomically as PNG.

Sample grids come from ``gan_models.utils.images`` (``make_grid`` / ``save_grid_png``, re-exported
here); interpolation strips and the nearest-neighbour figure are drawn here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gan_models.errors import DataError
from gan_models.metrics.images import ArrayLike, to_uint8
from gan_models.utils.images import make_grid, save_grid_png
from gan_models.utils.io import atomic_path


def save_interpolation_png(images: ArrayLike, path: str | os.PathLike) -> Path:
    """Write latent interpolations as PNG: (S, C, H, W) is one strip, (R, S, C, H, W) R strips."""
    x = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5:
        raise DataError(f"interpolations must be (S, C, H, W) or (R, S, C, H, W), got {x.shape}")
    r, s = x.shape[:2]
    return save_grid_png(x.reshape(r * s, *x.shape[2:]), path, nrow=s)


def save_nearest_pairs_figure(
    fake: ArrayLike,
    train: ArrayLike,
    distances: Sequence[float],
    path: str | os.PathLike,
    *,
    title: str = "generated (top) and nearest training image (bottom)",
    space: str = "pixel L2",
) -> Path:
    """Figure of generated samples (top row) above their nearest training images (bottom row).

    ``fake`` and ``train`` are (P, C, H, W) in [-1, 1], pair by pair; each column is labelled with
    its distance in ``space``. Rendered with matplotlib's Agg canvas and written atomically.
    """
    a, b = to_uint8(fake), to_uint8(train)  # (P, C, H, W) each
    if a.shape[0] != b.shape[0] or a.shape[0] != len(distances):
        raise DataError(
            f"{a.shape[0]} fakes, {b.shape[0]} neighbours and {len(distances)} distances"
        )
    p = a.shape[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # only a figure needs it
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(1.3 * p, 3.0), 3.2), dpi=100)
    FigureCanvasAgg(fig)
    for j in range(p):
        for row, imgs in enumerate((a, b)):
            ax = fig.add_subplot(2, p, row * p + j + 1)
            img = imgs[j].transpose(1, 2, 0)  # (H, W, C)
            if img.shape[2] == 1:
                ax.imshow(img[:, :, 0], cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 1:
                ax.set_xlabel(f"{distances[j]:.3g}", fontsize=8)
    fig.suptitle(f"{title}; {space} distance below", fontsize=9)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


__all__ = ["make_grid", "save_grid_png", "save_interpolation_png", "save_nearest_pairs_figure"]
