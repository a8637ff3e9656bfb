"""KID against a direct unbiased MMD; IS against its closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gan_models.errors import DataError
from gan_models.metrics import METRICS, inception_score, kid_from_features
from gan_models.metrics.kid import mmd2_unbiased, polynomial_kernel


def _direct_unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """MMD^2_u written out pair by pair with k(a, b) = (a.b / D + 1)^3."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(a @ b) / d + 1.0) ** 3

    m = len(x)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2.0 * xy


def test_kid_matches_a_direct_unbiased_mmd_on_a_small_case() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.4
    expected = _direct_unbiased_mmd2(x, y)
    kw = {"degree": 3, "gamma": 1 / 3, "coef0": 1.0}
    direct = mmd2_unbiased(
        polynomial_kernel(x, x, **kw), polynomial_kernel(x, y, **kw), polynomial_kernel(y, y, **kw)
    )
    assert direct == pytest.approx(expected, rel=1e-12)
    # A subset of all 7 rows is a permutation of each set, and MMD^2_u ignores row order.
    kid = kid_from_features(x, y, subsets=3, subset_size=7)
    assert kid["mean"] == pytest.approx(expected, rel=1e-12)
    assert kid["std"] == pytest.approx(0.0, abs=1e-12)
    assert kid["gamma"] == pytest.approx(1 / 3)
    assert METRICS["kid"].function is kid_from_features


def test_kid_is_near_zero_for_one_distribution_and_positive_when_shifted() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 8))
    same = rng.normal(size=(2000, 8))
    shifted = rng.normal(size=(2000, 8)) + 0.5
    k_same = kid_from_features(x, same, subsets=20, subset_size=500)
    k_shift = kid_from_features(x, shifted, subsets=20, subset_size=500)
    assert abs(k_same["mean"]) < 3 * k_same["std"] + 1e-3
    assert k_shift["mean"] > 20 * abs(k_same["mean"]) + 10 * k_shift["std"]
    assert k_same["subset_size"] == 500 and k_same["subsets"] == 20


def test_kid_is_seeded_and_caps_the_subset_size() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 4)), rng.normal(size=(200, 4))
    a = kid_from_features(x, y, subsets=5)
    assert a == kid_from_features(x, y, subsets=5)
    assert a["subset_size"] == 200 and a["seed"] == 2020
    assert a["mean"] != kid_from_features(x, y, subsets=5, seed=1)["mean"]


def test_is_is_one_for_constant_predictions() -> None:
    logits = np.tile(np.random.default_rng(3).normal(size=10), (500, 1))
    res = inception_score(logits)
    assert res["mean"] == pytest.approx(1.0, abs=1e-12)
    assert res["std"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 10])
def test_is_is_k_for_confident_predictions_spread_evenly_over_k_classes(k: int) -> None:
    n = 100 * k
    probs = np.eye(k)[np.arange(n) % k]  # one-hot, classes cycling so every split is balanced
    assert inception_score(probs=probs, splits=10, shuffle=False)["mean"] == pytest.approx(k)
    assert inception_score(probs=probs, splits=1)["mean"] == pytest.approx(k)
    # Confident logits give K up to the softmax's leftover mass.
    logits = 50.0 * probs
    assert inception_score(logits, splits=1)["mean"] == pytest.approx(k, rel=1e-6)


def test_is_matches_the_entropy_form() -> None:
    # IS = exp(H(E p) - E H(p)) with one split.
    p = np.random.default_rng(4).dirichlet(np.full(6, 0.3), size=400)
    h = -(p * np.log(p)).sum(1).mean()
    marginal = p.mean(0)
    expected = np.exp(-(marginal * np.log(marginal)).sum() - h)
    assert inception_score(probs=p, splits=1)["mean"] == pytest.approx(expected, rel=1e-10)


def test_is_rejects_bad_inputs() -> None:
    with pytest.raises(DataError, match="exactly one"):
        inception_score()
    with pytest.raises(DataError, match="splits"):
        inception_score(np.zeros((5, 3)), splits=10)
    with pytest.raises(DataError, match="summing to 1"):
        inception_score(probs=np.full((5, 3), 0.5))
