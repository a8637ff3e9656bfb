"""Density and coverage (Naeem et al. 2020), k = 5.

Around each real sample sits a ball of radius its k-th nearest real neighbour distance. Density is
the mean number of real balls that contain a fake sample, divided by k (about 1 when the two
distributions match, above 1 when fakes crowd dense regions); coverage is the share of real balls
that contain at least one fake sample. Strict inequalities, as in
clovaai/generative-evaluation-prdc.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gan_models.errors import DataError
from gan_models.metrics.neighbours import as_features, cross_distances, kth_neighbour_radii
from gan_models.metrics.registry import EvalContext, Metric, Need, fmt, register_metric


def density_coverage(real: Any, fake: Any, *, k: int = 5) -> dict[str, Any]:
    """Density and coverage of fake features (M, D) against real features (N, D)."""
    x = as_features(real, "real features")
    y = as_features(fake, "fake features")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"real and fake features differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    r_real = kth_neighbour_radii(x, k)  # (N,)
    inside = 0
    covered = np.zeros(x.shape[0], dtype=bool)
    # Over real rows, the orientation the radii were computed in (see precision_recall).
    for rows, d in cross_distances(x, y):  # d: (n, M) real rows -> fake
        ball = d < r_real[rows, None]
        inside += int(ball.sum())
        covered[rows] = d.min(axis=1) < r_real[rows]
    return {
        "density": inside / (k * y.shape[0]),
        "coverage": float(covered.mean()),
        "k": k,
        "n_real": int(x.shape[0]),
        "n_fake": int(y.shape[0]),
    }


# ---------------------------------------------------------------- registered metric


def evaluate_density_coverage(ctx: EvalContext) -> dict[str, Any]:
    """Against as many reference rows as generated samples (equal set sizes, as PRDC advises)."""
    real = ctx.subset(ctx.reference.features, ctx.n_samples)
    dc = density_coverage(real, ctx.features, k=ctx.options["dc_k"])
    return {**dc, "lineage": ctx.lineage(real.shape[0], ctx.n_samples)}


def density_coverage_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (key, fmt(r[key]), f"k={r.get('k')} (Naeem et al. 2020)")
        for key in ("density", "coverage")
        if r.get(key) is not None
    ]


DENSITY_COVERAGE = register_metric(
    Metric(
        "density_coverage",
        evaluate_density_coverage,
        needs={Need.FEATURES, Need.REFERENCE},
        summary=lambda r: {"density": r["density"], "coverage": r["coverage"]},
        rows=density_coverage_rows,
        function=density_coverage,
        description="density and coverage (k-NN balls of real samples)",
    )
)
