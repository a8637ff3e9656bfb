"""Precision/recall and density/coverage on constructed cases and against the reference formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from gan_models.errors import DataError
from gan_models.metrics import METRICS, density_coverage, precision_recall


def _reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """clovaai/generative-evaluation-prdc's definitions on full distance matrices."""
    r_real = np.sort(cdist(real, real), axis=1)[:, k]
    r_fake = np.sort(cdist(fake, fake), axis=1)[:, k]
    d = cdist(real, fake)  # (N, M)
    return {
        "precision": (d < r_real[:, None]).any(axis=0).mean(),
        "recall": (d < r_fake[None, :]).any(axis=1).mean(),
        "density": (d < r_real[:, None]).sum(axis=0).mean() / k,
        "coverage": (d.min(axis=1) < r_real).mean(),
    }


@pytest.mark.parametrize("k", [3, 5])
def test_matches_the_reference_definitions(k: int) -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 6))
    fake = rng.normal(size=(250, 6)) * 0.8 + 1.0
    ref = _reference_prdc(real, fake, k)
    pr, dc = precision_recall(real, fake, k=k), density_coverage(real, fake, k=k)
    assert pr["precision"] == pytest.approx(ref["precision"])
    assert pr["recall"] == pytest.approx(ref["recall"])
    assert dc["density"] == pytest.approx(ref["density"])
    assert dc["coverage"] == pytest.approx(ref["coverage"])
    assert 0.05 < pr["precision"] < 0.95 and 0.05 < pr["recall"] < 0.95  # a non-trivial case


def test_identical_sets_score_one() -> None:
    x = np.random.default_rng(1).normal(size=(400, 8))
    pr = precision_recall(x, x)
    dc = density_coverage(x, x)
    assert pr["precision"] == 1.0 and pr["recall"] == 1.0
    # Each real ball holds its own centre and k - 1 neighbours: density is exactly 1.
    assert dc["density"] == pytest.approx(1.0) and dc["coverage"] == 1.0
    copy = x.copy()  # equal content, another array
    assert precision_recall(x, copy)["recall"] == 1.0
    assert density_coverage(x, copy)["density"] == pytest.approx(1.0)


def test_collapsed_generator_has_low_recall_and_coverage() -> None:
    rng = np.random.default_rng(2)
    real = rng.normal(size=(500, 8))
    fake = real[0] + 1e-3 * rng.normal(size=(500, 8))  # every sample next to one real point
    pr, dc = precision_recall(real, fake), density_coverage(real, fake)
    assert pr["precision"] == 1.0  # each sample is realistic...
    assert pr["recall"] < 0.02  # ...but the generator covers almost none of the data
    assert dc["coverage"] < 0.02


def test_shifted_set_has_low_precision_and_density() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(500, 8))
    fake = rng.normal(size=(500, 8)) + 3.0
    pr, dc = precision_recall(real, fake), density_coverage(real, fake)
    assert pr["precision"] < 0.05
    assert dc["density"] < 0.05
    assert METRICS["precision_recall"].function is precision_recall
    assert METRICS["density_coverage"].function is density_coverage


def test_bad_inputs() -> None:
    with pytest.raises(DataError, match="dimension"):
        precision_recall(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(DataError, match="more than k"):
        density_coverage(np.random.rand(4, 2), np.random.rand(10, 2), k=5)
