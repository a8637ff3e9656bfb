"""Tracking against a real MLflow server: params, per-step metrics, sample grids, lineage tags,
resume into the same run, evaluation logging, the embedded default store, lineage and server
helpers. Everything is read back through ``MlflowClient``."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow_server import shared_mlflow_server, tiny_params_yaml, write_bars
from PIL import Image

from gan_models.config import load_params
from gan_models.errors import GanopsError
from gan_models.tracking import lineage as L
from gan_models.tracking.evaluation_log import log_evaluation
from gan_models.tracking.run_ref import RUN_REF_FILE, read_run_ref
from gan_models.tracking.server import free_port, start_mlflow_server, stop_process
from gan_models.tracking.store import default_tracking_uri, resolve_tracking_uri, using_tracking_uri
from gan_models.tracking.training_run import tracked_train
from gan_models.training.params import TrainParams
from gan_models.utils.io import sha256_file


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, pytestconfig):
    """A real MLflow server on 127.0.0.1 (sqlite + tmp artifacts), shared by the session."""
    return shared_mlflow_server(tmp_path_factory, pytestconfig)


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    return write_bars(tmp_path_factory.mktemp("data") / "bars")


def history(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def stats(run_dir):
    return [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]


def artifact_paths(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, f.path) if f.is_dir else [f.path]
    return out


def fake_fid(info):
    """An evaluation callback placed before the tracker: adds ``fid`` on even steps."""
    if info.step % 2 == 0:
        info.metrics["fid"] = 100.0 / info.step


def test_tracked_run_holds_params_metrics_images_and_lineage(
    mlflow_server, bars, tmp_path, monkeypatch
):
    # Sample system metrics every 0.1 s, and keep the 4-step run open for 3 s at its last step,
    # so the monitor publishes some samples however fast the training steps were.
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")

    def linger(info):
        if info.step == info.total_steps:
            time.sleep(3.0)

    params_file = tiny_params_yaml(tmp_path / "tiny.yaml", bars, sample_every=2)
    run_dir = tmp_path / "run"
    tags = {"optuna.study": "study-a", "optuna.trial": "3"}
    result = tracked_train(
        params_file, run_dir, callbacks=[fake_fid, linger], tags=tags, tracking_uri=mlflow_server
    )
    assert result.steps == 4

    ref = read_run_ref(run_dir)
    assert ref.tracking_uri == mlflow_server and ref.experiment_name == "ganops"
    client = MlflowClient(mlflow_server)
    run = client.get_run(ref.run_id)
    assert run.info.status == "FINISHED" and run.info.experiment_id == ref.experiment_id

    params = load_params(params_file, TrainParams)
    p = run.data.params
    assert p["model.family"] == "dcgan" and p["model.width"] == "8"
    assert p["train.steps"] == "4" and p["train.betas"] == "[0.5, 0.999]"
    assert p["data.path"] == str(bars) and p["data.split"] == "null"

    # Losses and images/s at every logged step, equal to stats.jsonl; fid where it was added.
    records = stats(run_dir)
    for key in ("G/loss", "D/loss", "images_per_s"):
        steps, values = zip(*history(client, ref.run_id, key), strict=True)
        assert steps == tuple(r["step"] for r in records)
        assert values == pytest.approx([r[key] for r in records])
    assert history(client, ref.run_id, "fid") == [(2, 50.0), (4, 25.0)]
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)

    # Lineage tags.
    t = run.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert t[L.TAG_GIT_COMMIT] == head.strip() and t[L.TAG_GIT_DIRTY] in ("true", "false")
    assert t[L.TAG_PARAMS_HASH] == params.digest()
    assert t[L.TAG_DATA_VERSION] == sha256_file(bars / "meta.json")
    assert t[L.TAG_DATA_VERSION_SOURCE] == "sha256 of meta.json"
    assert t[L.TAG_DATASET] == "bars" and t[L.TAG_FAMILY] == "dcgan"
    assert t["optuna.study"] == "study-a" and t["optuna.trial"] == "3"
    assert L.TAG_FLOW_RUN not in t  # not inside a Prefect flow

    # Artifacts: sample grids with their steps, figures, config, data record, run files.
    files = artifact_paths(client, ref.run_id)
    grids = {
        int(f.split("+step+")[1].split("+")[0]): f
        for f in files
        if f.startswith("images/samples+step+") and f.endswith(".png")
    }
    assert sorted(grids) == [2, 4]
    for name in (
        "figures/losses.png",
        "figures/fid.png",
        "config/tiny.yaml",
        "data/meta.json",
        "run/config.yaml",
        "run/stats.jsonl",
        "run/run.json",
    ):
        assert name in files, (name, files)
    local = client.download_artifacts(ref.run_id, grids[4], str(tmp_path / "dl"))
    logged, written = Image.open(local), Image.open(run_dir / "samples" / "step_00000004.png")
    assert np.array_equal(np.asarray(logged.convert("L")), np.asarray(written.convert("L")))


def test_resume_continues_the_same_mlflow_run(mlflow_server, bars, tmp_path):
    params_file = tiny_params_yaml(tmp_path / "p.yaml", bars, steps=4)
    run_dir = tmp_path / "run"

    def crash_at_3(info):
        if info.step == 3:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        tracked_train(params_file, run_dir, callbacks=[crash_at_3], tracking_uri=mlflow_server)
    ref = read_run_ref(run_dir)
    client = MlflowClient(mlflow_server)
    assert client.get_run(ref.run_id).info.status == "FAILED"

    # Without --resume a second start is refused before any MLflow run is opened.
    n_runs = len(client.search_runs([ref.experiment_id]))
    with pytest.raises(GanopsError, match="--resume"):
        tracked_train(params_file, run_dir, tracking_uri=mlflow_server)
    assert len(client.search_runs([ref.experiment_id])) == n_runs

    # Resume, with more steps: the same run (URI taken from mlflow_run.json) goes on to step 6.
    result = tracked_train(params_file, run_dir, resume=True, overrides=["train.steps=6"])
    assert result.resumed_from == 2 and read_run_ref(run_dir).run_id == ref.run_id
    run = client.get_run(ref.run_id)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in history(client, ref.run_id, "G/loss")][-4:] == [3, 4, 5, 6]
    assert run.data.params["train.steps"] == "4"  # params are write-once in MLflow
    assert run.data.tags["param_update.train.steps"] == "6"


def test_log_evaluation_attaches_metrics_lineage_and_figures(mlflow_server, bars, tmp_path):
    run_dir = tmp_path / "run"
    tracked_train(
        tiny_params_yaml(tmp_path / "p.yaml", bars, steps=2), run_dir, tracking_uri=mlflow_server
    )
    (run_dir / "samples.png").write_bytes((run_dir / "samples" / "step_00000002.png").read_bytes())
    metrics = {
        "fid": {"value": 41.5, "ci95": {"low": 40.0, "high": 43.0}},
        "precision_recall": {"precision": 0.7, "recall": 0.55, "k": 3},
        "summary": {"fid": 41.5, "fid_ci_low": 40.0, "fid_ci_high": 43.0, "recall": 0.55},
        "lineage": {"extractor": {"name": "domain", "sha256": "ab" * 32}, "n_fake": 100},
        "artifacts": {"samples": np.zeros((2, 1, 8, 8))},  # arrays never reach MLflow
    }
    ref = log_evaluation(run_dir, metrics)
    client = MlflowClient(mlflow_server)
    run = client.get_run(ref.run_id)
    assert run.data.metrics["eval/fid"] == 41.5 and run.data.metrics["eval/fid_ci_high"] == 43.0
    assert history(client, ref.run_id, "eval/recall") == [(2, 0.55)]  # at the final step
    assert run.data.tags["eval.lineage.extractor.name"] == "domain"
    assert run.data.tags["eval.lineage.n_fake"] == "100"
    files = artifact_paths(client, ref.run_id, "evaluation")
    assert sorted(files) == ["evaluation/metrics.json", "evaluation/samples.png"]
    local = client.download_artifacts(ref.run_id, "evaluation/metrics.json", str(tmp_path))
    logged = json.loads(Path(local).read_text())
    assert logged["fid"]["ci95"] == {"low": 40.0, "high": 43.0} and "artifacts" not in logged


def test_default_store_is_the_project_sqlite_with_artifacts_beside_it(bars, tmp_path, monkeypatch):
    """No URI anywhere: sqlite:///<project root>/mlflow.db, artifacts in <root>/mlartifacts."""
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.chdir(project / "sub")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{project / 'mlflow.db'}" == default_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri() == "http://127.0.0.1:1"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    # Inside an active run (a tuning study's), the training run is nested under it.
    run_dir = project / "runs" / "r"
    params_file = tiny_params_yaml(tmp_path / "p.yaml", bars, steps=2)
    with using_tracking_uri(default_tracking_uri()), mlflow.start_run(run_name="study") as parent:
        tracked_train(params_file, run_dir, log_system_metrics=False)
    ref = json.loads((run_dir / RUN_REF_FILE).read_text())
    assert ref["tracking_uri"] == f"sqlite:///{project / 'mlflow.db'}"
    assert (project / "mlflow.db").is_file() and not (project / "sub" / "mlruns").exists()
    stored = list((project / "mlartifacts" / "ganops").rglob("losses.png"))
    assert len(stored) == 1
    # The tracking URI of the process is left as it was.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:2")
    assert mlflow.get_tracking_uri() == "http://127.0.0.1:2"
    run = MlflowClient(ref["tracking_uri"]).get_run(ref["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags[L.TAG_GIT_COMMIT] == "unknown"  # the project is not a git checkout


def test_data_version_prefers_dvc_then_the_manifest(tmp_path):
    project = tmp_path / "proj"
    processed = project / "data" / "processed" / "digits"
    write_bars(processed / "train", n=6, name="digits")
    (processed / "manifest.json").write_text('{"name": "digits"}\n')
    raw = write_bars(project / "data" / "raw" / "digits", n=6, name="digits")
    (project / "pyproject.toml").write_text("")

    by_root = L.data_lineage(processed, "train", project)
    by_split = L.data_lineage(processed / "train", None, project)
    assert by_root == by_split
    assert by_root.name == "digits" and by_root.record == processed / "manifest.json"
    assert by_root.version == sha256_file(processed / "manifest.json")
    assert by_root.source == "sha256 of manifest.json"

    lock = {
        "schema": "2.0",
        "stages": {
            "prepare": {
                "cmd": "ganops data preprocess digits",
                "outs": [
                    {"path": "data/processed", "hash": "md5", "md5": "parent.dir"},
                    {"path": "data/processed/digits", "hash": "md5", "md5": "d41d8c.dir"},
                ],
            }
        },
    }
    (project / "dvc.lock").write_text(yaml.safe_dump(lock))
    found = L.data_lineage(processed, "train", project)
    assert (found.version, found.source) == ("d41d8c.dir", "dvc.lock")
    del lock["stages"]["prepare"]["outs"][1]  # only the containing folder is tracked
    (project / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert L.data_lineage(processed, "train", project).version == "parent.dir"

    assert L.data_lineage(raw, None, project).source == "sha256 of meta.json"
    (project / "data" / "raw" / "digits.dvc").write_text(
        yaml.safe_dump({"outs": [{"path": "digits", "md5": "raw123.dir", "hash": "md5"}]})
    )
    assert (L.data_lineage(raw, None, project).version, L.data_lineage(raw).source) == (
        "raw123.dir",
        "digits.dvc",
    )
    with pytest.raises(GanopsError, match="does not exist"):
        L.data_lineage(project / "data" / "raw" / "nothing")


def test_server_errors_are_clear_and_stop_process_stops(mlflow_server, bars, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(GanopsError, match="does not answer"):  # at once, not after retries
        tracked_train(
            tiny_params_yaml(tmp_path / "p.yaml", bars), tmp_path / "r", tracking_uri=dead
        )
    assert not (tmp_path / "r").exists()

    port = int(mlflow_server.rsplit(":", 1)[1])
    with pytest.raises(GanopsError, match="already in use by a running MLflow server"):
        start_mlflow_server(port=port, backend_uri="sqlite:///x.db", log_file=tmp_path / "a.log")
    with pytest.raises(GanopsError, match=r"exited with code \d+.*\n.*") as err:
        start_mlflow_server(
            port=free_port(),
            backend_uri="nosuchstore://nowhere",
            artifacts_dir=tmp_path / "art",
            log_file=tmp_path / "bad.log",
        )
    assert "nosuchstore" in str(err.value)  # the log's tail names the bad backend

    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    assert stop_process(proc.pid) is True
    assert proc.poll() is not None
    assert stop_process(proc.pid) is False
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


@pytest.mark.slow
def test_prefect_flow_run_id_is_a_lineage_tag(bars, tmp_path, monkeypatch):
    """Inside a Prefect flow run the tags name it; outside, they do not (about 40 s: Prefect's
    temporary server)."""
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    params = load_params(tiny_params_yaml(tmp_path / "p.yaml", bars), TrainParams)

    @flow
    def tag_flow():
        from prefect.runtime import flow_run

        return L.run_tags(params, tmp_path / "run"), str(flow_run.id)

    with prefect_test_harness():
        tags, flow_run_id = tag_flow()
    assert tags[L.TAG_FLOW_RUN] == flow_run_id
    assert L.TAG_FLOW_RUN not in L.run_tags(params, tmp_path / "run")
