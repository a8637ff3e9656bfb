"""Fréchet distance between Gaussians fitted to two feature sets (FID, Heusel et al. 2017).

    FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2 (torch-fidelity's
route): S1 S2 is similar to the PSD matrix S1^(1/2) S2 S1^(1/2), so its eigenvalues are real and
non-negative up to rounding; we keep the real parts and count those under the rounding noise
floor as 0 (see :func:`frechet_distance`). Unlike ``scipy.linalg.sqrtm`` this needs no epsilon
retry and works with singular covariances (fewer samples than dimensions). Everything runs in
float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gan_models.errors import DataError
from gan_models.metrics.registry import EvalContext, Metric, Need, fmt, register_metric


def _rows(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 2:
        raise DataError(f"{what} must be a 2-d array (samples, dims), got shape {a.shape}")
    if a.shape[0] < 2:
        raise DataError(f"{what} needs at least 2 samples for a covariance, got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise DataError(f"{what} hold NaN or infinite values")
    return a


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), float64, of features (N, D)."""
    f = _rows(features, "features")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise DataError(
            f"Fréchet distance needs means (D,) and covariances (D, D) of one D, got "
            f"{mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}"
        )
    diff = mu1 - mu2
    eig = np.linalg.eigvals(s1 @ s2).real  # (D,) real >= 0 in exact arithmetic
    # Eigenvalues under the noise floor (largest * D * eps, numpy's matrix_rank tolerance) are
    # zeros blurred by rounding: with n < D there are D - n + 1 of them near 1e-14,
    # whose square roots (1e-7 each) would add up to a visible error.
    floor = np.abs(eig).max(initial=0.0) * d * np.finfo(np.float64).eps
    tr_covmean = np.sqrt(np.where(eig > floor, eig, 0.0)).sum()
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid_from_features(real: Any, fake: Any) -> float:
    """FID between two feature sets (N1, D) and (N2, D)."""
    mu1, s1 = feature_statistics(real)
    mu2, s2 = feature_statistics(fake)
    return frechet_distance(mu1, s1, mu2, s2)


def fid_bootstrap_ci(
    real_mu: Any,
    real_sigma: Any,
    fake: Any,
    *,
    n_boot: int = 100,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Bootstrap interval of FID over the fake samples, against fixed real statistics.

    Resamples the rows of ``fake`` (N, D) with replacement ``n_boot`` times (seeded). Resampling
    with replacement duplicates rows, which by itself raises FID (the bootstrap distribution sits
    above the estimate by ``bootstrap_bias``, more so for small N or large D), so the raw percentile
    interval may miss the estimate altogether. The interval returned is the basic bootstrap interval
    around the bootstrap mean: ``[fid - (q_hi - mean), fid + (mean - q_lo)]``, an interval for
    the expected FID of N generated samples against this reference, which is what runs compared
    at equal N differ in. Returns ``{"low", "high", "level", "n_boot", "seed", "std",
    "bootstrap_bias", "method"}``; the reference statistics' own noise is not included.
    """
    f = _rows(fake, "fake features")
    if n_boot < 2:
        raise DataError(f"fid_bootstrap needs at least 2 resamples, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise DataError(f"confidence level must be in (0, 1), got {level}")
    fid = frechet_distance(real_mu, real_sigma, f.mean(0), np.cov(f, rowvar=False))
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        sample = f[rng.integers(0, f.shape[0], size=f.shape[0])]  # (N, D)
        values[b] = frechet_distance(
            real_mu, real_sigma, sample.mean(0), np.cov(sample, rowvar=False)
        )
    alpha = (1.0 - level) / 2.0
    q_lo, q_hi = np.quantile(values, [alpha, 1.0 - alpha])
    mean = values.mean()
    return {
        "low": float(max(fid - (q_hi - mean), 0.0)),  # an expected FID is never negative
        "high": float(fid + (mean - q_lo)),
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
        "std": float(values.std(ddof=1)),
        "bootstrap_bias": float(mean - fid),
        "method": "basic bootstrap around the bootstrap mean, fake rows resampled",
    }


# ---------------------------------------------------------------- registered metric


def evaluate_fid(ctx: EvalContext) -> dict[str, Any]:
    """FID against the whole train split's statistics with its bootstrap interval, and the
    real-vs-real floor: the test split (at most n_fake of its stored rows) against the same
    reference, next to the generated samples' FID at that count."""
    ref, test, fake = ctx.reference, ctx.test_reference, ctx.features
    n = ctx.n_samples
    value = frechet_distance(ref.mu, ref.sigma, *feature_statistics(fake))
    n_floor = min(n, test.features.shape[0])
    floor = frechet_distance(
        ref.mu, ref.sigma, *feature_statistics(ctx.subset(test.features, n_floor))
    )
    at_floor_n = frechet_distance(ref.mu, ref.sigma, *feature_statistics(fake[:n_floor]))
    ci = fid_bootstrap_ci(
        ref.mu, ref.sigma, fake, n_boot=ctx.options["fid_bootstrap"], seed=ctx.seed
    )
    return {
        "value": value,
        "ci95": ci,
        "floor": {"value": floor, "split": ctx.test_split, "n_real_test": n_floor},
        "value_at_floor_n": at_floor_n,
        "singular_covariance": n <= fake.shape[1] or ref.n <= fake.shape[1],
        "lineage": ctx.lineage(ref.n, n),
    }


def fid_summary(r: dict[str, Any]) -> dict[str, float]:
    s = {
        "fid": r["value"],
        "fid_ci_low": r["ci95"]["low"],
        "fid_ci_high": r["ci95"]["high"],
        "fid_floor": r["floor"]["value"],
        "fid_at_floor_n": r["value_at_floor_n"],
    }
    if r.get("untrained") is not None:  # evaluate_run's untrained-generator baseline
        s["fid_untrained"] = r["untrained"]
    return s


def fid_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    lin = r.get("lineage") or {}
    if r.get("value") is not None:
        ci = r.get("ci95") or {}
        rows.append(
            (
                "FID",
                f"{fmt(r['value'])} [{fmt(ci.get('low'))}, {fmt(ci.get('high'))}]",
                f"95% bootstrap CI, n_fake={lin.get('n_fake')} vs n_real={lin.get('n_real')}",
            )
        )
    floor = r.get("floor") or {}
    if floor.get("value") is not None:
        rows.append(
            (
                "FID floor",
                fmt(floor["value"]),
                f"real-vs-real floor: {floor.get('split')} (n={floor.get('n_real_test')}) vs "
                f"the reference, what a perfect generator scores here; generated at that n: "
                f"{fmt(r.get('value_at_floor_n'))}",
            )
        )
    return rows


FID = register_metric(
    Metric(
        "fid",
        evaluate_fid,
        needs={Need.FEATURES, Need.REFERENCE, Need.TEST_REFERENCE},
        summary=fid_summary,
        rows=fid_rows,
        function=fid_from_features,
        description="Fréchet distance of generated and train features, with CI and floor",
    )
)
