"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with a polynomial kernel.

    k(x, y) = (gamma <x, y> + coef0) ^ degree,   gamma = 1 / D, coef0 = 1, degree = 3

averaged over ``subsets`` random subsets of ``subset_size`` rows drawn without replacement from
each set, with the same random stream as torch-fidelity (``np.random.RandomState(2020)``, real rows
then fake rows per subset), so equal inputs give torch-fidelity's numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gan_models.errors import DataError
from gan_models.metrics.registry import EvalContext, Metric, Need, fmt, register_metric


def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> np.ndarray:
    """Kernel matrix (N, M) of rows x (N, D) and y (M, D)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD^2 from kernel matrices of two samples of equal size m.

    Within-set sums leave the diagonal out (divide by m(m-1)); the cross term divides by m^2.
    """
    m = k_xx.shape[0]
    if k_xx.shape != (m, m) or k_yy.shape != (m, m) or k_xy.shape != (m, m):
        raise DataError(f"kernel matrices must all be ({m}, {m})")
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid_from_features(
    real: Any,
    fake: Any,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 2020,
) -> dict[str, Any]:
    """KID between features real (N1, D) and fake (N2, D): ``{"mean", "std", ...}``.

    The subset size is ``min(subset_size, N1, N2)``; the result states the size used.
    """
    x = np.asarray(real, dtype=np.float64)
    y = np.asarray(fake, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise DataError(f"KID needs features (N, D) of one D, got {x.shape} and {y.shape}")
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise DataError(f"KID needs at least 2 samples per set, got {x.shape[0]} and {y.shape[0]}")
    if subsets < 1:
        raise DataError(f"KID needs at least one subset, got {subsets}")
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        xs = x[rng.choice(x.shape[0], m, replace=False)]  # (m, D)
        ys = y[rng.choice(y.shape[0], m, replace=False)]  # (m, D)
        kw = {"degree": degree, "gamma": gamma, "coef0": coef0}
        values[i] = mmd2_unbiased(
            polynomial_kernel(xs, xs, **kw),
            polynomial_kernel(xs, ys, **kw),
            polynomial_kernel(ys, ys, **kw),
        )
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "subsets": subsets,
        "subset_size": m,
        "degree": degree,
        "gamma": 1.0 / x.shape[1] if gamma is None else gamma,
        "coef0": coef0,
        "seed": seed,
    }


# ---------------------------------------------------------------- registered metric


def evaluate_kid(ctx: EvalContext) -> dict[str, Any]:
    """KID against the reference's stored feature subset."""
    real = ctx.reference.features
    o = ctx.options
    kid = kid_from_features(
        real,
        ctx.features,
        subsets=o["kid_subsets"],
        subset_size=o["kid_subset_size"],
        seed=o["kid_seed"],
    )
    return {**kid, "lineage": ctx.lineage(real.shape[0], ctx.n_samples)}


def kid_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    if r.get("mean") is None:
        return []
    spread = f"{fmt(r['mean'])} ± {fmt(r.get('std'), 2)}"
    return [("KID", spread, f"{r.get('subsets')} subsets of {r.get('subset_size')}")]


KID = register_metric(
    Metric(
        "kid",
        evaluate_kid,
        needs={Need.FEATURES, Need.REFERENCE},
        summary=lambda r: {"kid_mean": r["mean"], "kid_std": r["std"]},
        rows=kid_rows,
        function=kid_from_features,
        description="kernel inception distance (unbiased MMD^2, polynomial kernel)",
    )
)
