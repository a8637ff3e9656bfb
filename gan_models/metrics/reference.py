"""Reference statistics of a real split, cached on disk.

For one split and one extractor: the FID statistics over all N images (mean (D,), covariance
(D, D), float64) plus the features (and logits) of a seeded subset of at most ``max_features``
rows for KID, precision/recall, density/coverage, memorisation and the real IS (stored as float32).

The cache key hashes everything the numbers depend on: the images' content hash, the extractor's
name, weights hash and resize, ``max_features`` and the subset seed. Any change gives a new key, so
a cached entry is never stale; entries are single ``.npz`` files written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gan_models.errors import DataError
from gan_models.metrics.extractor import FeatureExtractor
from gan_models.metrics.images import ImagesLike, ScaledImages, array_sha256
from gan_models.utils.io import atomic_path

CACHE_ENV = "GANOPS_CACHE_DIR"
CACHE_VERSION = 1
# Images per extractor call while accumulating statistics: bounds memory on large splits.
_CHUNK = 4096


def default_cache_dir() -> Path:
    """``$GANOPS_CACHE_DIR`` or ``~/.cache/ganops``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ganops"


@dataclass
class ReferenceStats:
    """FID statistics of a whole split plus features of a seeded subset of it."""

    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    n: int  # images the statistics were computed over
    features: np.ndarray  # (M, D) float64, M = min(n, max_features)
    indices: np.ndarray  # (M,) rows of the split that ``features`` belong to
    logits: np.ndarray | None  # (M, K) float64 or None
    key: str
    lineage: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False


def reference_key(
    dataset_sha256: str, extractor: FeatureExtractor, *, max_features: int, seed: int
) -> str:
    """Cache key of a split's reference statistics under one extractor."""
    ident = {
        "version": CACHE_VERSION,
        "dataset_sha256": dataset_sha256,
        "extractor": extractor.name,
        "extractor_sha256": extractor.sha256,
        "resize": extractor.resize,
        "max_features": max_features,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _compute(
    images: ImagesLike, extractor: FeatureExtractor, indices: np.ndarray, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    n = images.shape[0]
    keep = np.zeros(n, dtype=bool)
    keep[indices] = True
    shift = None
    total = None
    outer = None
    kept_f, kept_l = [], []
    for start in range(0, n, _CHUNK):
        # A split opened from disk stays lazy here: the extractor reads it a batch at a time.
        rows = (
            images.rows(start, start + _CHUNK)
            if isinstance(images, ScaledImages)
            else images[start : start + _CHUNK]
        )
        f, lg = extractor.features_and_logits(rows, progress=progress)
        if shift is None:
            # Accumulating around the first chunk's mean keeps the covariance well conditioned.
            shift = f.mean(axis=0)
            total = np.zeros_like(shift)
            outer = np.zeros((f.shape[1], f.shape[1]))
        c = f - shift  # (B, D)
        total += c.sum(axis=0)
        outer += c.T @ c
        sel = keep[start : start + f.shape[0]]
        kept_f.append(f[sel].astype(np.float32))
        if lg is not None:
            kept_l.append(lg[sel].astype(np.float32))
    mean_c = total / n
    mu = shift + mean_c
    sigma = (outer - n * np.outer(mean_c, mean_c)) / (n - 1)
    return mu, sigma, np.concatenate(kept_f), (np.concatenate(kept_l) if kept_l else None)


def reference_stats(
    images: ImagesLike,
    extractor: FeatureExtractor,
    *,
    split: str,
    cache_dir: str | os.PathLike | None = None,
    max_features: int = 10000,
    seed: int = 0,
    dataset_sha256: str | None = None,
    progress: bool = False,
) -> ReferenceStats:
    """Reference statistics of ``images`` (N, C, H, W) in [-1, 1], from the cache when present.

    ``images`` may be a split opened from disk (:func:`gan_models.data.splits.open_split`): it
    is then hashed and passed through the extractor a batch at a time, with the same numbers
    as the split held in memory, so memory does not grow with the split's size.

    ``split`` names the split for the lineage (e.g. ``"mnist5k/train"``); it is not part of the
    key, the content hash is (``dataset_sha256`` may pass a precomputed :func:`array_sha256`).
    ``cache_dir`` defaults to :func:`default_cache_dir`.
    """
    n = int(images.shape[0])
    if n < 2:
        raise DataError(f"reference split {split!r} needs at least 2 images, got {n}")
    data_hash = dataset_sha256 or array_sha256(
        images if isinstance(images, ScaledImages) else np.asarray(images)
    )
    key = reference_key(data_hash, extractor, max_features=max_features, seed=seed)
    path = Path(cache_dir or default_cache_dir()) / "reference" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    logits = z["logits"].astype(np.float64) if z["logits"].size else None
                    return ReferenceStats(
                        mu=z["mu"],
                        sigma=z["sigma"],
                        n=int(z["n"]),
                        features=z["features"].astype(np.float64),
                        indices=z["indices"],
                        logits=logits,
                        key=key,
                        lineage=json.loads(str(z["lineage"])),
                        from_cache=True,
                    )
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass  # unreadable entry: recompute and replace it below
    m = min(n, max_features)
    if m == n:
        indices = np.arange(n)
    else:
        indices = np.sort(np.random.default_rng(seed).choice(n, m, replace=False))
    mu, sigma, feats, logits = _compute(images, extractor, indices, progress)
    lineage = {
        "split": split,
        "dataset_sha256": data_hash,
        "n": n,
        "n_features": m,
        "subset_seed": seed,
        "extractor": extractor.lineage(),
        "features_dtype": "float32",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            key=np.array(key),
            mu=mu,
            sigma=sigma,
            n=np.array(n),
            features=feats,
            indices=indices,
            logits=logits if logits is not None else np.zeros((0,), np.float32),
            lineage=np.array(json.dumps(lineage, sort_keys=True)),
        )
    return ReferenceStats(
        mu=mu,
        sigma=sigma,
        n=n,
        features=feats.astype(np.float64),
        indices=indices,
        logits=None if logits is None else logits.astype(np.float64),
        key=key,
        lineage=lineage,
        from_cache=False,
    )
