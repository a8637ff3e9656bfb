"""k-nearest-neighbour helpers shared by precision/recall, density/coverage and memorisation.

Distances are Euclidean, computed with scikit-learn in row chunks so that 10^4 x 10^4 pairs never
sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from gan_models.errors import DataError

# MiB per distance chunk: small, because several engineers share a 2-core machine.
WORKING_MEMORY_MB = 256


def as_features(x: Any, what: str) -> np.ndarray:
    """Features as a float64 array (N, D), checked for rank and finiteness."""
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise DataError(
            f"{what} must be a non-empty 2-d array (samples, dims), got shape {a.shape}"
        )
    if not np.isfinite(a).all():
        raise DataError(f"{what} hold NaN or infinite values")
    return a


def kth_neighbour_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance (N,) from each row of x (N, D) to its k-th nearest other row.

    As in the reference PRDC code, this is the (k+1)-th smallest distance with the point itself
    counted, so duplicates of a point count as neighbours. Computed with :func:`cross_distances`,
    the same routine that measures real-to-fake distances, so a fake sample equal to a real one
    gets bit-identical distances and the strict ``<`` comparisons behave as in the reference.
    """
    if not 1 <= k < x.shape[0]:
        raise DataError(f"k={k} nearest neighbours need more than k samples, got {x.shape[0]}")
    radii = np.empty(x.shape[0])
    for rows, d in cross_distances(x, x):  # d: (m, N)
        radii[rows] = np.partition(d, k, axis=1)[:, k]
    return radii


def nearest(query: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (Nq,) and index (Nq,) of the nearest row of ``ref`` for each row of ``query``."""
    from sklearn.neighbors import NearestNeighbors  # imported here: ~1.5 s that only a search needs

    nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(ref)
    dist, idx = nn.kneighbors(query)  # (Nq, 1) each
    return dist[:, 0], idx[:, 0]


def cross_distances(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (rows of a, distances (rows, Nb)) chunk by chunk over the rows of a."""
    from sklearn.metrics import pairwise_distances_chunked

    start = 0
    for chunk in pairwise_distances_chunked(a, b, working_memory=WORKING_MEMORY_MB):
        yield slice(start, start + chunk.shape[0]), chunk
        start += chunk.shape[0]
