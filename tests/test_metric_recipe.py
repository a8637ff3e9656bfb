"""Adding a metric is one file: a metric defined here, registered through the public API, is
computed by a real evaluation and shows in metrics.json (with its summary number), in the
``ganops evaluate`` / ``ganops summary`` table and in the model card, with no other change
(docs/architecture.md, "Add a metric")."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from bars import write_processed_bars
from typer.testing import CliRunner

from gan_models.cli import app
from gan_models.config import load_params
from gan_models.data.format import read_imageset
from gan_models.metrics import (
    METRICS,
    EvalContext,
    Metric,
    Need,
    register_metric,
    registered_metrics,
    unregister_metric,
)
from gan_models.metrics.config import FeaturesParams
from gan_models.metrics.extractors import load_extractor, train_features
from gan_models.metrics.registry import fmt
from gan_models.sampling import RunGenerator
from gan_models.tracking.card import model_card
from gan_models.training import train
from gan_models.training.params import TrainParams

# ----------------------------------------------------------------------------- the metric


def mean_norm_ratio(real: Any, fake: Any) -> float:
    """Mean L2 norm of the generated features over that of the real ones (1 when they match)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    return float(np.linalg.norm(fake, axis=1).mean() / np.linalg.norm(real, axis=1).mean())


def evaluate_mean_norm_ratio(ctx: EvalContext) -> dict[str, Any]:
    real = ctx.reference.features  # the reference's stored rows (here: the whole train split)
    return {
        "value": mean_norm_ratio(real, ctx.features),
        "lineage": ctx.lineage(real.shape[0], ctx.n_samples),
    }


MEAN_NORM_RATIO = Metric(
    "mean_norm_ratio",
    evaluate_mean_norm_ratio,
    needs={Need.FEATURES, Need.REFERENCE},
    summary=lambda r: {"mean_norm_ratio": r["value"]},
    rows=lambda r: [("mean norm ratio", fmt(r["value"]), "generated / real mean feature norm")],
    function=mean_norm_ratio,
    description="mean feature norm of generated samples relative to real ones",
)


@pytest.fixture
def registered():
    register_metric(MEAN_NORM_RATIO)
    yield MEAN_NORM_RATIO
    unregister_metric(MEAN_NORM_RATIO.name)


# ----------------------------------------------------------------------------- a tiny run


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANOPS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step DCGAN on processed 8x8 bars (train/val/test) and the bars' domain classifier."""
    tmp = tmp_path_factory.mktemp("recipe")
    root = tmp / "bars"
    write_processed_bars(root)
    features = tmp / "features"
    params = FeaturesParams(domain={"epochs": 3, "batch_size": 16, "width": 8, "hidden": 32})
    train_features(root, params, features)
    params = TrainParams(
        model={"family": "dcgan", "width": 8, "latent_dim": 8},
        data={"path": str(root), "split": "train", "image_size": 8},
        train={"steps": 4, "batch_size": 8, "checkpoint_every": 2, "progress": False},
    )
    train(params, tmp / "run")
    return tmp / "run", features


# ----------------------------------------------------------------------------- tests


def test_mean_norm_ratio_closed_form():
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(50, 6))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    assert mean_norm_ratio(2 * unit, 3 * unit[::-1]) == pytest.approx(1.5, rel=1e-12)
    assert mean_norm_ratio(unit, unit) == 1.0


def test_a_metric_defined_here_reaches_every_output(registered, run, tmp_path):
    run_dir, features_dir = run
    assert METRICS["mean_norm_ratio"] is registered
    assert registered_metrics()[-1] is registered  # after the built-ins

    args = ["evaluate", str(run_dir), "--features-dir", str(features_dir), "--n-samples", "30"]
    args += ["--set", "evaluate.fid_bootstrap=5", "--set", "evaluate.kid_subsets=3"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "mean norm ratio" in out.output and "generated / real mean feature norm" in out.output

    metrics = json.loads((run_dir / "metrics.json").read_text())
    entry = metrics["mean_norm_ratio"]
    assert metrics["summary"]["mean_norm_ratio"] == entry["value"]
    assert entry["lineage"]["n_fake"] == 30 and entry["lineage"]["n_real"] == 90
    assert entry["lineage"]["extractor"] == metrics["fid"]["lineage"]["extractor"]
    # The value is the closed form over the extractor's features of the same samples.
    extractor = load_extractor(FeaturesParams(), classifier_dir=features_dir)
    fake, _ = RunGenerator.from_run_dir(run_dir).generate(30, 0)
    real = read_imageset(run_dir.parent / "bars" / "train").images
    want = mean_norm_ratio(extractor.features(real), extractor.features(fake))
    assert entry["value"] == pytest.approx(want, rel=1e-6)

    summary = CliRunner().invoke(app, ["summary", str(run_dir)])
    [line] = [x for x in summary.output.splitlines() if x.startswith("mean norm ratio")]
    assert fmt(entry["value"]) in line.split()

    params = load_params(run_dir / "config.yaml", TrainParams)
    card = model_card("dcgan-bars", params, metrics, {})
    row = f"| mean norm ratio | {fmt(entry['value'])} | generated / real mean feature norm |"
    assert row in card
    assert "| FID |" in card  # beside the built-ins


def test_the_registry_refuses_what_it_cannot_render():
    with pytest.raises(ValueError, match="already registered"):
        register_metric(METRICS["fid"])
    with pytest.raises(ValueError, match="none of"):
        Metric("summary", evaluate_mean_norm_ratio)
    with pytest.raises(TypeError, match="Need members"):
        Metric("norms", evaluate_mean_norm_ratio, needs={"features"})
    with pytest.raises(KeyError, match="no metric named"):
        unregister_metric("mean_norm_ratio")  # not registered outside the fixture
    assert "mean_norm_ratio" not in METRICS  # the other tests see the built-ins only
