"""Image array conventions shared by the extractors and metrics.

Metrics take images as float arrays in [-1, 1] of shape (N, C, H, W), the generators' output range
and the processed datasets' storage format. uint8 arrays (raw datasets, 0..255) are accepted too
and mapped to [-1, 1] as x / 127.5 - 1. A processed split opened with
:func:`gan_models.data.splits.open_split` (a :class:`ScaledImages`) is read a batch at a time
by :func:`image_batches` and hashed a chunk at a time by :func:`array_sha256`, with the numbers
of the whole split held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import torch

from gan_models.data.splits import ScaledImages
from gan_models.errors import DataError
from gan_models.utils.images import RANGE_SLACK, ArrayLike, as_images, to_uint8

__all__ = [
    "RANGE_SLACK",
    "ArrayLike",
    "ImagesLike",
    "ScaledImages",
    "array_sha256",
    "as_images",
    "image_batches",
    "num_images",
    "to_uint8",
]

#: Images a metric accepts: in memory, or a split read from disk batch by batch.
ImagesLike = ArrayLike | ScaledImages


def array_sha256(*arrays: np.ndarray | ScaledImages | None) -> str:
    """Content hash of arrays: dtype, shape and bytes of each (``None`` hashes as absent).

    A :class:`ScaledImages` hashes as the float32 array it stands for, read a chunk at a time.
    """
    h = hashlib.sha256()
    for arr in arrays:
        if arr is None:
            h.update(b"none;")
            continue
        if isinstance(arr, ScaledImages):
            h.update(f"{arr.dtype.str}{arr.shape};".encode())
            for chunk in arr.chunks():
                h.update(np.ascontiguousarray(chunk).reshape(-1).view(np.uint8).data)
            continue
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape};".encode())
        # Hash in slices so a large split does not need a second copy in memory.
        flat = arr.reshape(-1).view(np.uint8)
        for start in range(0, flat.size, 1 << 26):
            h.update(flat[start : start + (1 << 26)].data)
    return h.hexdigest()


def num_images(x: ImagesLike, what: str = "images") -> int:
    """N of images (N, C, H, W), without reading a :class:`ScaledImages`."""
    if x.ndim != 4:
        raise DataError(f"{what} must have shape (N, C, H, W), got {tuple(x.shape)}")
    return int(x.shape[0])


def image_batches(
    x: ImagesLike, batch_size: int, *, what: str = "images"
) -> Iterator[torch.Tensor]:
    """Consecutive batches (B, C, H, W) float32 in [-1, 1] on the CPU, ``batch_size`` at a time.

    Arrays and tensors are checked and converted whole (:func:`as_images`) and sliced; a
    :class:`ScaledImages` is read and checked one batch at a time, with the same values.
    """
    if isinstance(x, ScaledImages):
        if len(x) == 0:
            raise DataError(f"{what} holds no images")
        for start in range(0, len(x), batch_size):
            yield as_images(x[start : start + batch_size], what=what)
        return
    images = as_images(x, what=what)
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]
