"""Improved precision and recall (Kynkäänniemi et al. 2019), k = 3.

Each set's manifold is the union of balls around its samples with radius the distance to the
k-th nearest neighbour within the set. Precision is the share of fake samples inside the real
manifold; recall the share of real samples inside the fake manifold. Strict inequalities, as in
clovaai/generative-evaluation-prdc.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gan_models.errors import DataError
from gan_models.metrics.neighbours import as_features, cross_distances, kth_neighbour_radii
from gan_models.metrics.registry import EvalContext, Metric, Need, fmt, register_metric


def precision_recall(real: Any, fake: Any, *, k: int = 3) -> dict[str, Any]:
    """Precision and recall of fake features (M, D) against real features (N, D)."""
    x = as_features(real, "real features")
    y = as_features(fake, "fake features")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"real and fake features differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    r_real = kth_neighbour_radii(x, k)  # (N,)
    r_fake = kth_neighbour_radii(y, k)  # (M,)
    # Each pass runs over the rows of the set whose radii it compares with, in the orientation
    # the radii were computed in, so an exact copy of a sample meets bit-identical distances.
    fake_in_real = np.zeros(y.shape[0], dtype=bool)
    for rows, d in cross_distances(x, y):  # d: (n, M) real rows -> fake
        fake_in_real |= (d < r_real[rows, None]).any(axis=0)
    real_in_fake = np.zeros(x.shape[0], dtype=bool)
    for rows, d in cross_distances(y, x):  # d: (m, N) fake rows -> real
        real_in_fake |= (d < r_fake[rows, None]).any(axis=0)
    return {
        "precision": float(fake_in_real.mean()),
        "recall": float(real_in_fake.mean()),
        "k": k,
        "n_real": int(x.shape[0]),
        "n_fake": int(y.shape[0]),
    }


# ---------------------------------------------------------------- registered metric


def evaluate_precision_recall(ctx: EvalContext) -> dict[str, Any]:
    """Against as many reference rows as generated samples (equal set sizes, as PRDC advises)."""
    real = ctx.subset(ctx.reference.features, ctx.n_samples)
    pr = precision_recall(real, ctx.features, k=ctx.options["pr_k"])
    return {**pr, "lineage": ctx.lineage(real.shape[0], ctx.n_samples)}


def precision_recall_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (key, fmt(r[key]), f"k={r.get('k')} (Kynkäänniemi et al. 2019)")
        for key in ("precision", "recall")
        if r.get(key) is not None
    ]


PRECISION_RECALL = register_metric(
    Metric(
        "precision_recall",
        evaluate_precision_recall,
        needs={Need.FEATURES, Need.REFERENCE},
        summary=lambda r: {"precision": r["precision"], "recall": r["recall"]},
        rows=precision_recall_rows,
        function=precision_recall,
        description="improved precision and recall (k-NN manifolds)",
    )
)
