"""The per-image statistics table: one row per image, the table the validation suite checks.

Images are not tabular, so each image becomes one row of statistics: shape, dtype, pixel range
over its finite pixels, finiteness, a content hash, its label and that label's share of the set.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from gan_models.errors import DataError

ROW_INDEX = "row"
STATS_COLUMNS = [
    "index",
    "label",
    "channels",
    "height",
    "width",
    "shape",
    "dtype",
    "min",
    "max",
    "mean",
    "std",
    "sha1",
    "finite",
    "class_share",
]


def _image_hash(img: np.ndarray) -> str:
    # dtype and shape are part of the identity: equal bytes in another layout are another image.
    h = hashlib.sha1(f"{img.dtype.str}{img.shape}".encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def _row_stats(img: np.ndarray) -> dict[str, Any]:
    """Statistics of one (C, H, W) image; min/max/mean/std over its finite pixels."""
    x = img.astype(np.float64, copy=False)
    finite = bool(np.isfinite(x).all())
    if not finite:
        # +-inf stay visible as the extremes for the range rules; NaN is left to the finiteness
        # rule, so it is dropped here.
        x = x[~np.isnan(x)]
    c, h, w = img.shape
    empty = x.size == 0
    with np.errstate(invalid="ignore", over="ignore"):
        return {
            "channels": c,
            "height": h,
            "width": w,
            "shape": f"{c}x{h}x{w}",
            "dtype": str(img.dtype),
            "min": math.nan if empty else float(x.min()),
            "max": math.nan if empty else float(x.max()),
            "mean": math.nan if empty else float(x.mean()),
            "std": math.nan if empty else float(x.std()),
            "sha1": _image_hash(img),
            "finite": finite,
        }


def image_stats_table(
    images: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | Sequence[int] | None = None,
) -> pd.DataFrame:
    """One row of statistics per image, indexed by the image's position.

    ``images`` is an (N, C, H, W) array or a list of per-image (C, H, W) or (H, W) arrays, so sets
    of mixed sizes or channel counts can be described (and then rejected by the suite).
    """
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise DataError(f"images must be an (N, C, H, W) array, got shape {images.shape}")
    rows = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.ndim == 2:  # (H, W) grey image
            img = img[None]
        if img.ndim != 3:
            raise DataError(f"image {i}: expected shape (C, H, W) or (H, W), got {img.shape}")
        rows.append({"index": i, **_row_stats(img)})
    table = pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in ("label",)])
    if not rows:  # typed empty columns, so the suite sees an empty table rather than objects
        table = table.astype(
            {"index": "int64", "channels": "int64", "height": "int64", "width": "int64"}
            | {c: "float64" for c in ("min", "max", "mean", "std")}
            | {"finite": "bool"}
        )
    if labels is not None:
        lab = np.asarray(labels)
        if lab.ndim != 1 or lab.shape[0] != len(rows):
            raise DataError(f"labels must have shape ({len(rows)},), got {lab.shape}")
        table["label"] = lab.astype(np.int64)
        share = table["label"].map(table["label"].value_counts(normalize=True))
        table["class_share"] = share.astype(np.float64)
    else:
        table["label"] = pd.array([None] * len(rows), dtype="Int64")
        table["class_share"] = np.full(len(rows), np.nan)
    table = table[STATS_COLUMNS]
    table.index = pd.RangeIndex(len(rows), name=ROW_INDEX)
    return table
