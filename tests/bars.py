"""8x8 "bars": three classes, each a bright column band on a dark ground. For evaluation tests
as train/val/test splits in the processed format ([-1, 1] float32); for training tests as one
set of 48 uint8 images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gan_models.data.format import write_imageset

SPLITS = (("train", 90), ("val", 15), ("test", 30))


def write_processed_bars(root: Path, splits=SPLITS) -> Path:
    """``root``/{train,val,test}: labelled bars, the same pixels on every call."""
    rng = np.random.default_rng(0)
    for split, n in splits:
        labels = np.arange(n) % 3
        x = rng.uniform(-1, -0.6, (n, 1, 8, 8)).astype(np.float32)
        for i, y in enumerate(labels):
            x[i, 0, :, 2 * y : 2 * y + 3] = 0.9
        write_imageset(root / split, {"images": x}, labels=labels, meta={"name": "bars"})
    return root


def write_tiny_bars(path: Path) -> Path:
    """``path``: 48 labelled 8x8 grey uint8 images of noisy bars, the same pixels on every call."""
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 3
    images = rng.integers(0, 60, (48, 1, 8, 8)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 0, :, 2 * y : 2 * y + 3] = 230
    write_imageset(path, {"images": images}, labels=labels, meta={"name": "bars", "source": "test"})
    return path
