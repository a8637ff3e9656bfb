"""Image array conventions shared by the extractors and metrics.

Metrics take images as float arrays in [-1, 1] of shape (N, C, H, W), the generators' output range
and the processed datasets' storage format. uint8 arrays (raw datasets, 0..255) are accepted too
and mapped to [-1, 1] as x / 127.5 - 1.
"""

from __future__ import annotations

import hashlib

import numpy as np

from gan_models.utils.images import RANGE_SLACK, ArrayLike, as_images, to_uint8

__all__ = ["RANGE_SLACK", "ArrayLike", "array_sha256", "as_images", "to_uint8"]


def array_sha256(*arrays: np.ndarray | None) -> str:
    """Content hash of arrays: dtype, shape and bytes of each (``None`` hashes as absent)."""
    h = hashlib.sha256()
    for arr in arrays:
        if arr is None:
            h.update(b"none;")
            continue
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape};".encode())
        # Hash in slices so a large split does not need a second copy in memory.
        flat = arr.reshape(-1).view(np.uint8)
        for start in range(0, flat.size, 1 << 26):
            h.update(flat[start : start + (1 << 26)].data)
    return h.hexdigest()
