"""The augmentation experiment (`ganops augment`) on tiny labelled bars: every arm end to end,
the subsets, the classical augmentation and the intervals against closed forms, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from bars import write_processed_bars
from mlflow.tracking import MlflowClient

from gan_models.augment.classical import affine_params, augment_batch
from gan_models.augment.config import AugmentParams, ClassicalParams
from gan_models.augment.experiment import _arm_data, run_experiment
from gan_models.augment.report import plot_csv, summarise, t_interval, table_markdown, verdict
from gan_models.augment.subsets import check_disjoint, subset_indices, write_subset
from gan_models.data.format import read_imageset, write_imageset
from gan_models.errors import DataError
from gan_models.metrics.config import FeaturesParams
from gan_models.metrics.extractors import train_features

REPO = Path(__file__).resolve().parents[1]

GENERATOR = {
    "model": {"family": "cgan", "latent_dim": 8, "width": 8, "embed_dim": 4},
    "loss": {"type": "hinge"},
    "data": {"path": "unused", "split": "train", "image_size": 8},
    "train": {
        "steps": 4,
        "batch_size": 8,
        "checkpoint_every": 2,
        "sample_every": 2,
        "log_every": 1,
        "progress": False,
    },
}


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    """Processed bars (3 classes, 30 train images each) with a domain classifier beside them."""
    root = tmp_path_factory.mktemp("data")
    data = write_processed_bars(root / "processed" / "bars")
    features = root / "features" / "bars"
    train_features(
        data,
        FeaturesParams(domain={"epochs": 4, "batch_size": 16, "width": 8, "hidden": 16}),
        features,
    )
    gen = root / "cgan-bars.yaml"
    gen.write_text(yaml.safe_dump(GENERATOR))
    return data, features, gen


def tiny_params(bars, tmp_path, **update) -> dict:
    data, features, gen = bars
    p = {
        "data": str(data),
        "features_dir": str(features),
        "k": [4, 8],
        "seeds": 2,
        "ratios": [1, 2],
        "classifier": {"steps": 6, "batch_size": 8, "width": 4, "hidden": 8},
        "generator": {"params": str(gen), "n_samples": 24},
        "workers": 1,
        "out": str(tmp_path / "reports"),
        "runs": str(tmp_path / "runs"),
    }
    p.update(update)
    return p


def test_every_arm_runs_end_to_end_and_is_tracked(bars, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = AugmentParams(**tiny_params(bars, tmp_path))
    report = run_experiment(params, tracking_uri=uri, echo=lambda s: None)
    arms = [a.name for a in params.expanded_arms()]
    assert arms == [
        "real",
        "classical",
        "synthetic-1x",
        "synthetic-2x",
        "classical+synthetic-1x",
        "classical+synthetic-2x",
        "synthetic-only",
    ]
    out = tmp_path / "reports" / "bars"
    summary = report["summary"]
    for k in ("k4", "k8"):
        for arm in arms:
            e = summary[k][arm]
            assert len(e["seeds"]) == 2 and all(0 <= a <= 1 for a in e["seeds"])
            assert e["low"] <= e["accuracy"] <= e["high"]
    # the files dvc metrics / plots read, the table, the plot, the conclusion
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"k4", "k8"} and set(metrics["k4"]) == set(arms)
    rows = (out / "accuracy.csv").read_text().splitlines()
    assert rows[0] == "k," + ",".join(arms) and [r.split(",")[0] for r in rows[1:]] == ["4", "8"]
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for arm in arms[1:]:
        assert f"- {arm}: " in (out / "conclusion.md").read_text()
    assert "| synthetic-only |" in (out / "table.md").read_text()
    # MLflow: a parent run with a child per arm; generators trained under it and registered
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ganops-augment")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("ganops.kind") == "augment"]
    assert len(parent) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    names = {r.info.run_name for r in children}
    assert set(arms) <= names and {"cgan-bars-k4", "cgan-bars-k8"} <= names
    child = next(r for r in children if r.info.run_name == "classical")
    assert child.data.metrics["accuracy_k4"] == pytest.approx(
        summary["k4"]["classical"]["accuracy"]
    )
    versions = client.search_model_versions("name='cgan-bars-k4'")
    assert len(versions) == 1
    assert {a.path for a in client.list_artifacts(parent[0].info.run_id, "augment")} >= {
        "augment/accuracy.png",
        "augment/table.md",
        "augment/metrics.json",
    }
    # a second run reuses the generators (same params) and gives the same accuracies
    again = run_experiment(params, tracking_uri=uri, echo=lambda s: None)
    assert again["summary"] == summary
    assert len(client.search_model_versions("name='cgan-bars-k4'")) == 1


def test_subsets_are_nested_seeded_disjoint_from_test_and_shared_by_arms(bars, tmp_path):
    data, _, _ = bars
    labels = read_imageset(data / "train").labels
    a = subset_indices(labels, 4, seed=0)
    assert np.array_equal(a, subset_indices(labels, 4, seed=0))
    assert not np.array_equal(a, subset_indices(labels, 4, seed=1))
    assert set(a) <= set(subset_indices(labels, 8, seed=0))  # nested across k
    assert np.bincount(labels[a]).tolist() == [4, 4, 4]
    m = write_subset(data, tmp_path / "bars-k4", 4, 0)
    assert m["indices"] == a.tolist()
    sub = read_imageset(tmp_path / "bars-k4" / "train")
    train, test = read_imageset(data / "train"), read_imageset(data / "test")
    assert np.array_equal(sub.images, train.images[a])
    test_rows = {x.tobytes() for x in test.images}
    assert not any(x.tobytes() in test_rows for x in sub.images)
    with pytest.raises(DataError, match="also in the test split"):
        check_disjoint(sub.images, np.concatenate([test.images, sub.images[:1]]), "x")
    # every arm that uses real images gets exactly the subset; synthetic draws are nested
    params = AugmentParams(**tiny_params(bars, tmp_path))
    real = (torch.from_numpy(np.asarray(sub.images)), torch.from_numpy(sub.labels))
    pool = (torch.randn(3 * 8, 1, 8, 8), torch.arange(3).repeat(8))
    sets = {arm.name: _arm_data(arm, 4, real, pool, 3) for arm in params.expanded_arms()}
    for name, (x, y) in sets.items():
        if name != "synthetic-only":
            assert torch.equal(x[:12], real[0]) and torch.equal(y[:12], real[1])
    assert torch.equal(sets["synthetic-2x"][0][12:24], sets["synthetic-1x"][0][12:])
    assert np.bincount(sets["synthetic-2x"][1][12:].numpy()).tolist() == [8, 8, 8]
    assert torch.equal(sets["synthetic-only"][0], pool[0][:24])


def test_classical_shift_and_flip_match_their_closed_forms():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) / 72
    shift_only = ClassicalParams(crop=2, flip=False, rotate=0, scale=0)
    gen = torch.Generator().manual_seed(3)
    _, shift = affine_params(2, 6, shift_only, torch.Generator().manual_seed(3))
    y = augment_batch(x, shift_only, gen)
    for i, (dx, dy) in enumerate(shift.long().tolist()):
        # pad by repeating the edge, then crop: a shift of (dx, dy) pixels
        padded = torch.nn.functional.pad(x[i : i + 1], (2, 2, 2, 2), mode="replicate")
        want = padded[0, :, 2 - dy : 8 - dy, 2 - dx : 8 - dx]
        assert torch.allclose(y[i], want, atol=1e-5)
    flip_only = ClassicalParams(crop=0, flip=True, rotate=0, scale=0)
    y = augment_batch(x.repeat(16, 1, 1, 1), flip_only, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(yi, x[i % 2].flip(-1), atol=1e-5) for i, yi in enumerate(y)]
    same = [torch.allclose(yi, x[i % 2], atol=1e-5) for i, yi in enumerate(y)]
    assert all(f or s for f, s in zip(flipped, same, strict=True)) and any(flipped) and any(same)


def test_intervals_and_verdicts_against_closed_forms():
    m, lo, hi = t_interval([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) * s / sqrt(n)
    assert m == 3 and lo == pytest.approx(3 - half) and hi == pytest.approx(3 + half)
    assert verdict(0.1, 0.2) == "helps" and verdict(-0.2, -0.1) == "hurts"
    assert verdict(-0.1, 0.2) == "no clear difference"
    s = summarise({10: {"real": [0.5, 0.6, 0.7], "x": [0.6, 0.7, 0.8]}})
    assert s["k10"]["x"]["diff"] == pytest.approx(0.1)
    assert s["k10"]["x"]["diff_low"] == pytest.approx(0.1)  # paired: the differences agree
    assert s["k10"]["x"]["verdict"] == "helps"
    # read back from JSON (keys sorted as strings), rows and lines still run in increasing k
    s = summarise({200: {"real": [0.9, 0.8]}, 10: {"real": [0.5, 0.6]}, 50: {"real": [0.7, 0.7]}})
    s = json.loads(json.dumps(s, sort_keys=True))
    assert [r.split(",")[0] for r in plot_csv(s, ["real"]).splitlines()[1:]] == ["10", "50", "200"]
    assert "| k = 10 | k = 50 | k = 200 |" in table_markdown(s, ["real"], {"real": "real"})


def ganops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gan_models.cli", *args], cwd=cwd, capture_output=True, text=True
    )


def bad_input_cases(bars, tmp_path) -> list[tuple[dict, list[str], str]]:
    data, _, gen = bars
    unlabelled = tmp_path / "unlabelled"
    for split in ("train", "test"):
        write_imageset(
            unlabelled / split, {"images": np.zeros((6, 1, 8, 8), np.uint8)}, meta={"name": "u"}
        )
    dcgan = tmp_path / "dcgan.yaml"
    dcgan.write_text(yaml.safe_dump({**GENERATOR, "model": {"family": "dcgan", "width": 8}}))
    return [
        ({"data": str(unlabelled)}, [], "has no labels"),
        ({"k": [4, 31]}, [], "k=31 is larger than class 0"),
        ({"arms": ["real", "mixup"]}, [], "unknown arm 'mixup'"),
        ({}, ["--arm", "gan"], "--arm: unknown arm 'gan'"),
        ({"generator": {"params": str(dcgan)}}, [], "dcgan family, which is not conditional"),
        ({"k": [1]}, [], "fewer than the generator's train.batch_size 8"),
        ({"arms": ["classical"]}, [], "arms must include 'real'"),
    ]


def test_bad_input_is_one_clear_line_and_exit_2(bars, tmp_path):
    for i, (update, extra, message) in enumerate(bad_input_cases(bars, tmp_path)):
        base = tiny_params(bars, tmp_path)
        base.update(update)
        if "generator" in update:
            base["generator"] = {**tiny_params(bars, tmp_path)["generator"], **update["generator"]}
        file = tmp_path / f"augment{i}.yaml"
        file.write_text(yaml.safe_dump({"augment": base}))
        r = ganops("augment", str(file), "--check", *extra, cwd=REPO)
        assert r.returncode == 2, (message, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
        assert len(lines) == 1 and message in lines[0], (message, r.stderr)
        assert "Traceback" not in r.stderr
