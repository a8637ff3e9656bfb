"""Tracking never holds training hostage: the MLflow server stopped mid-training, every value
delivered exactly once when it is up, the outbox's memory bound. Real servers on 127.0.0.1."""

import json
import time

import pytest
from mlflow.tracking import MlflowClient
from mlflow_server import shared_mlflow_server, tiny_params_yaml, write_bars
from typer.testing import CliRunner

from gan_models.cli import app
from gan_models.tracking.outbox import (
    PENDING_DIR,
    PENDING_FILE,
    Outbox,
    read_pending,
    send_entries,
)
from gan_models.tracking.run_ref import read_run_ref
from gan_models.tracking.server import free_port, start_mlflow_server, stop_process
from gan_models.tracking.training_run import tracked_train
from gan_models.training import train
from gan_models.utils.io import sha256_file

KEYS = ("G/loss", "D/loss", "images_per_s")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, pytestconfig):
    return shared_mlflow_server(tmp_path_factory, pytestconfig)


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    return write_bars(tmp_path_factory.mktemp("data") / "bars")


def stats(run_dir):
    return [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]


def steps_per_s(records, first, last):
    """Steps per wall-clock second between two logged steps (stats.jsonl's ``time``)."""
    t = {r["step"]: r["time"] for r in records}
    return (last - first) / (t[last] - t[first])


def artifact_paths(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, f.path) if f.is_dir else [f.path]
    return out


@pytest.mark.slow
def test_server_stopped_mid_training_then_synced(bars, tmp_path, capfd):
    """About 60 s: two MLflow server starts, a tracked and an untracked 400-step run."""
    steps, stop_at = 400, 100
    root = tmp_path / "server"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    store = dict(backend_uri=f"sqlite:///{root / 'mlflow.db'}", artifacts_dir=root / "artifacts")
    proc = start_mlflow_server(port=port, log_file=root / "server1.log", **store)
    stopped = {}

    def stop_server(info):
        if info.step == stop_at:
            stop_process(proc.pid)
            stopped["at"] = info.step

    params = tiny_params_yaml(
        tmp_path / "p.yaml", bars, steps=steps, checkpoint_every=100, sample_every=50
    )
    run_dir = tmp_path / "tracked"
    try:
        began = time.monotonic()
        result = tracked_train(
            params, run_dir, callbacks=[stop_server], tracking_uri=uri, flush_timeout=3.0
        )
        tracked_seconds = time.monotonic() - began
    finally:
        stop_process(proc.pid)
    assert stopped == {"at": stop_at} and result.steps == steps

    # Same weights as training without tracking, and about as fast while the server is gone.
    plain = train(params, tmp_path / "plain")
    assert sha256_file(run_dir / "generator.safetensors") == sha256_file(
        plain.run_dir / "generator.safetensors"
    )
    records = stats(run_dir)
    before = steps_per_s(records, 10, stop_at - 1)
    during = steps_per_s(records, stop_at + 10, steps)
    assert during > 0.5 * before, (before, during)
    # The whole run, the bounded wait at the end included, is far from one retry's minutes.
    assert tracked_seconds < plain.seconds + 60, (tracked_seconds, plain.seconds)

    # What was not sent is listed, and the user was told what and how to send it.
    err = capfd.readouterr().err
    assert "does not take the run's entries" in err
    assert f"ganops mlflow-sync {run_dir}" in err and "metric values" in err
    pending = read_pending(run_dir)
    assert pending[-1]["kind"] == "end" and pending[-1]["status"] == "FINISHED"
    pending_steps = sorted({m[3] for e in pending if e["kind"] == "metrics" for m in e["metrics"]})
    assert pending_steps and pending_steps[-1] == steps and pending_steps[0] <= stop_at + 1
    assert pending_steps == list(range(pending_steps[0], steps + 1))  # none skipped
    artifacts = {
        (e.get("path"), e["file"].rsplit("/", 1)[-1]) for e in pending if e["kind"] == "artifact"
    }
    assert {("figures", "losses.png"), ("run", "stats.jsonl"), ("run", "run.json")} <= artifacts
    assert [e["step"] for e in pending if e["kind"] == "image"][-1] == steps
    for e in pending:  # every file a pending entry names is kept in the run folder
        if "file" in e:
            assert (run_dir / e["file"]).is_file(), e
    assert (run_dir / PENDING_DIR).is_dir()  # the figures were copied there

    # The server comes back on the same store; the sync sends the rest.
    proc = start_mlflow_server(port=port, log_file=root / "server2.log", **store)
    try:
        out = CliRunner().invoke(app, ["mlflow-sync", str(run_dir)])
        assert out.exit_code == 0, out.output
        assert "sent" in out.output and "metric values" in out.output
        assert not (run_dir / PENDING_FILE).exists() and not (run_dir / PENDING_DIR).exists()
        again = CliRunner().invoke(app, ["mlflow-sync", str(run_dir)])
        assert again.exit_code == 0 and "nothing pending" in again.output

        client = MlflowClient(uri)
        ref = read_run_ref(run_dir)
        run = client.get_run(ref.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["ganops.steps"] == str(steps)
        for key in KEYS:  # every step, once, equal to stats.jsonl
            history = sorted((m.step, m.value) for m in client.get_metric_history(ref.run_id, key))
            assert [s for s, _ in history] == list(range(1, steps + 1)), key
            assert [v for _, v in history] == pytest.approx([r[key] for r in records])
        files = artifact_paths(client, ref.run_id)
        for name in ("figures/losses.png", "run/stats.jsonl", "run/run.json", "data/meta.json"):
            assert name in files, (name, files)
        grids = sorted(
            int(f.split("+step+")[1].split("+")[0])
            for f in files
            if f.startswith("images/samples+step+") and f.endswith(".png")
        )
        assert grids == list(range(50, steps + 1, 50))
    finally:
        stop_process(proc.pid)


def test_every_step_arrives_once_with_the_server_up(mlflow_server, bars, tmp_path):
    steps = 60
    params = tiny_params_yaml(tmp_path / "p.yaml", bars, steps=steps, sample_every=20)
    run_dir = tmp_path / "run"
    tracked_train(params, run_dir, tracking_uri=mlflow_server, log_system_metrics=False)
    assert not (run_dir / PENDING_FILE).exists()
    client = MlflowClient(mlflow_server)
    ref = read_run_ref(run_dir)
    run = client.get_run(ref.run_id)
    assert run.info.status == "FINISHED"
    records = stats(run_dir)
    for key in KEYS:
        history = sorted(client.get_metric_history(ref.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(1, steps + 1)), key
        assert [m.value for m in history] == pytest.approx([r[key] for r in records])
    grids = [f for f in artifact_paths(client, ref.run_id, "images") if f.endswith(".png")]
    assert len(grids) == 3  # steps 20, 40 and the final 60, each once

    # Values keep the timestamp they were queued with: a batch sent twice (a retry whose answer
    # was lost, a sync after a partial delivery) adds no second point.
    m = client.get_metric_history(ref.run_id, "G/loss")[0]
    entry = {"kind": "metrics", "metrics": [[m.key, m.value, m.timestamp, m.step]]}
    send_entries(client, ref.run_id, run_dir, [entry])
    assert len(client.get_metric_history(ref.run_id, "G/loss")) == steps


def test_the_queue_is_bounded_and_keeps_everything_in_order(tmp_path, capfd):
    """A server that never answers: past the bound entries go to disk, nothing is lost."""
    dead = f"http://127.0.0.1:{free_port()}"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "stats.jsonl").write_text("{}\n")
    box = Outbox(MlflowClient(dead), "0" * 32, run_dir, tracking_uri=dead, max_values=10)
    began = time.monotonic()
    for step in range(1, 31):
        box.put_metrics({"a": step, "b": -step}, step, timestamp_ms=step)
    box.put_artifact(run_dir / "stats.jsonl", "run")
    assert time.monotonic() - began < 1.0  # queuing never waits on the network
    pending = box.close(wait=0.5, end={"kind": "end", "status": "FINISHED", "end_time": 1})
    err = capfd.readouterr().err
    assert "10 metric values are queued (the limit)" in err
    assert "60 metric values" in err and "1 artifacts (run/stats.jsonl)" in err
    values = [m for e in pending if e["kind"] == "metrics" for m in e["metrics"]]
    assert [(k, s) for k, _, _, s in values] == [(k, s) for s in range(1, 31) for k in "ab"]
    assert read_pending(run_dir) == [*pending, {"kind": "end", "status": "FINISHED", "end_time": 1}]
