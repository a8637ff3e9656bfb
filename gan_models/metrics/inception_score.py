"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), over splits.

The samples are shuffled with a seeded permutation (torch-fidelity's ``RandomState(2020)``) and
cut into ``splits`` contiguous parts; the score is computed per part with p(y) the part's mean
prediction, and the mean and (population) std over parts are reported, as in torch-fidelity and
StyleGAN2-ADA.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import rel_entr, softmax

from gan_models.errors import DataError
from gan_models.metrics.registry import EvalContext, Metric, Need, fmt, register_metric


def inception_score(
    logits: Any = None,
    *,
    probs: Any = None,
    splits: int = 10,
    shuffle: bool = True,
    seed: int = 2020,
) -> dict[str, Any]:
    """IS from classifier ``logits`` (N, K) or class probabilities ``probs`` (N, K).

    Returns ``{"mean", "std", "splits", "seed", "n"}``. Constant predictions give 1; confident
    predictions spread evenly over K classes give K.
    """
    if (logits is None) == (probs is None):
        raise DataError("inception_score needs exactly one of logits or probs")
    if logits is not None:
        p = softmax(np.asarray(logits, dtype=np.float64), axis=1)  # (N, K)
    else:
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim == 2 and (p.min() < 0 or not np.allclose(p.sum(1), 1.0, atol=1e-6)):
            raise DataError("probs must be non-negative rows summing to 1")
    if p.ndim != 2:
        raise DataError(f"IS needs predictions of shape (N, K), got {p.shape}")
    n = p.shape[0]
    if not 1 <= splits <= n:
        raise DataError(f"IS splits must be in 1..N={n}, got {splits}")
    if shuffle:
        p = p[np.random.RandomState(seed).permutation(n)]
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]  # (n_i, K)
        marginal = part.mean(axis=0, keepdims=True)  # (1, K)
        # rel_entr treats 0 * log(0 / q) as 0, so one-hot rows are fine.
        kl = rel_entr(part, marginal).sum(axis=1)  # (n_i,)
        scores.append(np.exp(kl.mean()))
    return {
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "splits": splits,
        "seed": seed if shuffle else None,
        "n": n,
    }


# ---------------------------------------------------------------- registered metric


def evaluate_inception_score(ctx: EvalContext) -> dict[str, Any]:
    """IS of the generated samples, next to the IS of the test split's stored logits."""
    splits = ctx.options["is_splits"]
    test = ctx.test_reference
    real = None
    if test.logits is not None and test.logits.shape[0] >= splits:
        real = inception_score(test.logits, splits=splits)
    lineage = ctx.lineage(None, ctx.n_samples, real_test_n=None if real is None else real["n"])
    return {**inception_score(ctx.logits, splits=splits), "real_test": real, "lineage": lineage}


def inception_score_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    if r.get("mean") is None:
        return []
    real = r.get("real_test")
    note = f"{r.get('splits')} splits" + (f"; real test {fmt(real['mean'])}" if real else "")
    return [("IS", f"{fmt(r['mean'])} ± {fmt(r.get('std'), 2)}", note)]


INCEPTION_SCORE = register_metric(
    Metric(
        "is",
        evaluate_inception_score,
        needs={Need.LOGITS, Need.TEST_REFERENCE},
        summary=lambda r: {"is_mean": r["mean"], "is_std": r["std"]},
        rows=inception_score_rows,
        function=inception_score,
        description="inception score of the extractor's class posteriors",
    )
)
