"""Processed splits as the networks see them: float32 in [-1, 1], resized like the trainer does.

Stored images are uint8 0..255 (or float32 -1..1 for sets written before format 2).
:func:`scale_to_model` maps a batch to the models' range and size on any device; the trainer's
batches, evaluation, FID during training and the families' seeded inputs all go through it, so
every consumer sees the same pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gan_models.data.format import ImageSet, read_imageset
from gan_models.errors import DataError

if TYPE_CHECKING:
    from gan_models.training.params import TrainParams


def scale_to_model(x: Tensor, size: int | None) -> Tensor:
    """uint8 0..255 or float32 -1..1 (N, C, H, W) on any device -> float32 -1..1, at ``size``."""
    x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()  # (N, C, H, W)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        x = x.clamp_(-1.0, 1.0)
    return x


def to_model_range(arr: np.ndarray, size: int | None) -> Tensor:
    """uint8 0..255 or float32 -1..1 (N, C, H, W) -> float32 -1..1 tensor, resized to ``size``."""
    return scale_to_model(torch.from_numpy(np.ascontiguousarray(arr)), size)


def dataset_name(params: TrainParams) -> str:
    """The dataset a run trained on: the name of its data directory (``data/processed/NAME``)."""
    return Path(params.data.path).name


def load_split(root: str | Path, split: str, image_size: int | None = None) -> ImageSet:
    """A processed split as float32 [-1, 1] images, resized like the trainer resizes them."""
    path = Path(root) / split
    if not (path / "meta.json").is_file():
        raise DataError(
            f"{path}: no {split!r} split; evaluation needs a processed dataset with train/test "
            f"splits (run `ganops data preprocess {Path(root).name}`)"
        )
    ds = read_imageset(path)
    images = to_model_range(ds.images, image_size).numpy()  # (N, C, S, S)
    return ImageSet({"images": images}, ds.labels, ds.meta)


def load_unpaired_split(root: str | Path, split: str, size: int | None) -> dict[str, np.ndarray]:
    """Both domains of a processed unpaired split as float32 [-1, 1] (N, C, size, size)."""
    path = Path(root) / split
    if not (path / "meta.json").is_file():
        raise DataError(
            f"{path}: no {split!r} split; evaluating a translation needs a processed unpaired "
            f"dataset with train/test splits (run `ganops data preprocess {Path(root).name}`)"
        )
    ds = read_imageset(path)
    if ds.kind != "unpaired":
        raise DataError(f"{path}: expected an unpaired dataset (arrays a and b), got {ds.kind!r}")
    return {k: to_model_range(ds.arrays[k], size).numpy() for k in ("a", "b")}
