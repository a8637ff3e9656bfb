"""Evaluation stages on a tiny processed dataset: features, evaluate a run, FID during training."""

import json

import pytest
from bars import write_processed_bars

from gan_models.cli import main
from gan_models.evaluation import evaluate_run
from gan_models.metrics.config import EvaluateParams, FeaturesParams
from gan_models.metrics.extractors import train_features
from gan_models.training import train
from gan_models.training.params import TrainParams


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANOPS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """data/processed/bars: 3 classes of 8x8 bars in [-1, 1], train/val/test splits."""
    root = tmp_path_factory.mktemp("processed") / "bars"
    return write_processed_bars(root)


@pytest.fixture(scope="module")
def classifier(processed, tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "bars"
    params = FeaturesParams(domain={"epochs": 10, "batch_size": 16, "width": 8, "hidden": 32})
    card = train_features(processed, params, out)
    return out, card


def run_params(processed, **train) -> TrainParams:
    t = {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 1, "progress": False}
    t.update(train)
    return TrainParams(
        model={"family": "dcgan", "width": 8, "latent_dim": 8},
        data={"path": str(processed), "split": "train", "image_size": 8},
        train=t,
    )


def test_classifier_learns_the_bars(classifier):
    _, card = classifier
    assert card["test_accuracy"] > 0.9  # three clearly different bar positions


def test_evaluate_run_writes_metrics_and_figures(processed, classifier, tmp_path):
    features_dir, _ = classifier
    run = tmp_path / "run"
    train(run_params(processed), run)
    ev = EvaluateParams(n_samples=40, fid_bootstrap=10, kid_subsets=5, memorization_samples=10)
    result = evaluate_run(run, features=FeaturesParams(), evaluate=ev, features_dir=features_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    fid = metrics["fid"]
    assert fid["value"] > 0 and fid["ci95"]["low"] <= fid["ci95"]["high"]
    assert fid["floor"]["value"] < fid["untrained"]
    assert metrics["lineage"]["n_fake"] == 40
    assert metrics["lineage"]["extractor"]["sha256"] == result["lineage"]["extractor"]["sha256"]
    assert metrics["run"]["family"] == "dcgan" and metrics["run"]["dataset"] == "bars"
    for fig in ("samples.png", "interpolation.png", "nearest_neighbours.png"):
        assert (run / fig).stat().st_size > 0
    # Evaluation is reproducible bit for bit (what `dvc repro -f` relies on).
    first = (run / "metrics.json").read_bytes()
    evaluate_run(run, features=FeaturesParams(), evaluate=ev, features_dir=features_dir)
    assert (run / "metrics.json").read_bytes() == first


def test_fid_during_training_does_not_change_the_run(processed, classifier, tmp_path):
    features_dir, _ = classifier
    train(run_params(processed), tmp_path / "plain")
    train(
        run_params(processed, fid_every=2, fid_samples=16, fid_features=str(features_dir)),
        tmp_path / "fid",
    )
    stats = [json.loads(x) for x in (tmp_path / "fid" / "stats.jsonl").read_text().splitlines()]
    fids = {s["step"]: s["fid"] for s in stats if "fid" in s}
    assert sorted(fids) == [2, 4] and all(v > 0 for v in fids.values())
    import torch

    a = torch.load(tmp_path / "plain/checkpoints/step_00000004.pt", weights_only=False)
    b = torch.load(tmp_path / "fid/checkpoints/step_00000004.pt", weights_only=False)
    for k, v in a["nets"]["G"].items():
        assert torch.equal(v, b["nets"]["G"][k]), k


def test_evaluate_cli_and_its_errors(processed, classifier, tmp_path, capsys):
    features_dir, _ = classifier
    run = tmp_path / "run"
    train(run_params(processed), run)
    argv = ["evaluate", str(run), "--features-dir", str(features_dir), "--n-samples", "30"]
    assert (
        main([*argv, "--set", "evaluate.fid_bootstrap=5", "--set", "evaluate.kid_subsets=3"]) == 0
    )
    out = capsys.readouterr().out
    assert "FID" in out and "untrained" in out
    # No Inception weights offline: a clear error that says how to provide them.
    code = main([*argv, "--extractor", "inception", "--set", "features.inception.download=false"])
    err = capsys.readouterr().err
    assert code == 2 and ("--inception-weights" in err or "GANOPS_INCEPTION_WEIGHTS" in err)
    # No classifier for this dataset: says how to train one.
    assert main(["evaluate", str(run), "--features-dir", str(tmp_path / "none")]) == 2
    assert "ganops features train bars" in capsys.readouterr().err
