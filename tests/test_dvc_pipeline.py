"""The DVC pipeline end to end, on tiny params, in a temporary git repository (real dvc, no mocks)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ("fetch", "validate", "preprocess", "features", "tune", "train", "evaluate", "register")

TINY = {
    "params/data.yaml": {
        "fetch": {"source": "digits", "name": "digits"},
        "preprocess": {"image_size": 8},
    },
    "params/features.yaml": {"features": {"domain": {"epochs": 2, "width": 8, "hidden": 32}}},
    "params/train.yaml": {
        "data": {"path": "data/processed/digits", "image_size": 8},
        "model": {"width": 8, "latent_dim": 8},
        "train": {
            "steps": 4,
            "batch_size": 16,
            "checkpoint_every": 2,
            "log_every": 1,
            "sample_every": 0,
            "fid_every": 2,
            "fid_samples": 50,
        },
    },
    "params/evaluate.yaml": {
        "evaluate": {
            "n_samples": 100,
            "fid_bootstrap": 5,
            "kid_subsets": 5,
            "kid_subset_size": 50,
            "memorization_samples": 20,
        }
    },
}


def merge(base: dict, top: dict) -> dict:
    for k, v in top.items():
        base[k] = merge(base.get(k) or {}, v) if isinstance(v, dict) else v
    return base


def sh(args: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvcproj")
    proj = root / "proj"
    proj.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "gan_models", proj / "gan_models", ignore=ignore)
    shutil.copytree(REPO / "params", proj / "params")
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, proj / name)
    for rel, patch in TINY.items():
        path = proj / rel
        path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), patch)))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(proj),  # run the copied code, the one DVC hashes
        "GANOPS_CACHE_DIR": str(root / "cache"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    sh(["git", "init", "-q", "-b", "main"], proj, env)
    sh(["dvc", "init", "-q"], proj, env)
    sh(["dvc", "remote", "add", "--local", "-d", "local", str(root / "remote")], proj, env)
    sh(["git", "add", "-A"], proj, env)
    sh(["git", "commit", "-qm", "tiny pipeline"], proj, env)
    out = sh(["dvc", "repro"], proj, env)
    return proj, env, out


def test_repro_runs_every_stage_and_writes_metrics(project):
    proj, env, out = project
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((proj / "runs/train/metrics.json").read_text())
    assert metrics["fid"]["value"] > 0 and metrics["lineage"]["n_fake"] == 100
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    fid_curve = (proj / "runs/train/curves/fid.csv").read_text().splitlines()
    assert fid_curve[0] == "step,fid" and len(fid_curve) == 3  # steps 2 and 4


def test_registered_champion_samples(project):
    proj, env, _ = project
    record = json.loads((proj / "runs/train/registration.json").read_text())
    assert record["model"] == "dcgan-digits" and record["decision"] == "promoted"
    sh(
        ["ganops", "sample", "models:/dcgan-digits@champion", "-n", "16", "-o", "grid.npy"],
        proj,
        env,
    )
    sh(["ganops", "sample", "runs/train", "-n", "16", "-o", "run.npy"], proj, env)
    import numpy as np

    assert np.array_equal(np.load(proj / "grid.npy"), np.load(proj / "run.npy"))


def test_second_repro_is_a_no_op(project):
    proj, env, _ = project
    out = sh(["dvc", "repro"], proj, env)
    assert "Running stage" not in out
    assert "up to date" in out


def test_forced_repro_reproduces_metrics_bit_for_bit(project):
    proj, env, _ = project
    before = (proj / "runs/train/metrics.json").read_bytes()
    out = sh(["dvc", "repro", "-f", "train", "evaluate", "--single-item"], proj, env)
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    assert (proj / "runs/train/metrics.json").read_bytes() == before


def test_metrics_and_plots_show(project):
    proj, env, _ = project
    assert "fid" in sh(["dvc", "metrics", "show"], proj, env)
    sh(["dvc", "plots", "show", "-o", "plots_html"], proj, env)
    assert (proj / "plots_html" / "index.html").is_file()


def test_push_pull_round_trip(project):
    proj, env, _ = project
    sh(["dvc", "push"], proj, env)
    manifest = (proj / "data/processed/digits/manifest.json").read_bytes()
    weights = (proj / "runs/train/generator.safetensors").read_bytes()
    shutil.rmtree(proj / "data/processed/digits")
    (proj / "runs/train/generator.safetensors").unlink()
    shutil.rmtree(proj / ".dvc" / "cache")
    sh(["dvc", "pull"], proj, env)
    assert (proj / "data/processed/digits/manifest.json").read_bytes() == manifest
    assert (proj / "runs/train/generator.safetensors").read_bytes() == weights


def test_experiment_with_a_param_override(project):
    proj, env, _ = project
    sh(["git", "add", "-A"], proj, env)
    sh(["git", "commit", "-qm", "lock"], proj, env)
    sh(["dvc", "exp", "run", "-S", "params/train.yaml:train.lr=0.001"], proj, env)
    shown = sh(["dvc", "exp", "show", "--no-pager", "--csv"], proj, env)
    assert "0.001" in shown
