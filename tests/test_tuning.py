"""Optuna tuning on a tiny project: a study writes best.yaml, a bad trial is pruned, parallel
workers on one sqlite storage record each trial once, a killed trial is retried from its
checkpoint. Real Optuna RDB storage (sqlite) and a real MLflow server; nothing is mocked."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow_server import shared_mlflow_server
from optuna.trial import TrialState

from gan_models.cli import main
from gan_models.config import load_params
from gan_models.data.format import write_imageset
from gan_models.metrics.config import FeaturesParams
from gan_models.metrics.extractors import train_features
from gan_models.training.params import TrainParams
from gan_models.tuning.inputs import load_tuning
from gan_models.tuning.storage import open_study

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, pytestconfig):
    return shared_mlflow_server(tmp_path_factory, pytestconfig)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder: processed 8x8 bars, their domain classifier, base and tune params."""
    root = tmp_path_factory.mktemp("proj")
    data = root / "data" / "processed" / "bars"
    rng = np.random.default_rng(0)
    for split, n in (("train", 96), ("test", 30)):
        labels = np.arange(n) % 3
        x = rng.uniform(-1, -0.6, (n, 1, 8, 8)).astype(np.float32)
        for i, y in enumerate(labels):
            x[i, 0, :, 2 * y : 2 * y + 3] = 0.9
        write_imageset(data / split, {"images": x}, labels=labels, meta={"name": "bars"})
    features = FeaturesParams(domain={"epochs": 8, "batch_size": 16, "width": 8, "hidden": 32})
    train_features(data, features, root / "models" / "features" / "bars")
    (root / "params").mkdir()
    base = {
        "data": {"path": str(data), "split": "train", "image_size": 8},
        "model": {"family": "dcgan", "width": 8, "latent_dim": 8},
        "train": {
            "steps": 12,
            "batch_size": 16,
            "lr": 2e-3,
            "log_every": 2,
            "checkpoint_every": 4,
            "fid_every": 4,
            "fid_samples": 48,
            "fid_features": str(root / "models" / "features" / "bars"),
            "progress": False,
        },
    }
    (root / "params" / "base.yaml").write_text(yaml.safe_dump(base))
    return root


def write_tune(project: Path, name: str, **over) -> Path:
    tune = {
        "study": name,
        "trials": 3,
        "budget": {"train.steps": 12},
        "sampler": {"type": "random", "seed": 1},
        "pruner": {"type": "none"},
        "heartbeat": {"interval": 1, "grace_period": 3, "max_retry": 2},
        "space": {
            "train.lr": {"low": 5e-4, "high": 3e-3, "log": True},
            "train.betas.0": {"low": 0.0, "high": 0.9},
            "model.width": {"choices": [4, 8]},
        },
    }
    tune.update(over)
    path = project / "params" / f"tune-{name}.yaml"
    path.write_text(yaml.safe_dump({"tune": tune}))
    return path


def ganops(project, *args, check=True, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "gan_models.cli", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def study_of(project, tune_file, name, base="base.yaml"):
    tuning = load_tuning(project / "params" / base, tune_file, root=project)
    return optuna.load_study(study_name=name, storage=tuning.storage_url)


def test_tiny_study_writes_best_yaml_and_logs_nested_runs(project, mlflow_server, monkeypatch):
    monkeypatch.chdir(project)
    tune = write_tune(project, "tiny")
    out = project / "params" / "best.yaml"
    argv = ["tune", "params/base.yaml", "--tune-params", str(tune), "--out", str(out)]
    assert main([*argv, "--tracking-uri", mlflow_server]) == 0

    study = study_of(project, tune, "tiny")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    best = min(trials, key=lambda t: t.values[0])

    # best.yaml: the base file plus the best trial's values, and where they came from.
    params = load_params(out, TrainParams)
    assert params.tuned.study == "tiny" and params.tuned.trial == best.number
    assert params.tuned.values == {"fid": pytest.approx(best.values[0])}
    assert params.train.lr == pytest.approx(best.params["train.lr"])
    assert params.train.betas[0] == pytest.approx(best.params["train.betas.0"])
    assert params.train.betas[1] == 0.999  # the rest of the list is the base's
    assert params.model.width == best.params["model.width"]
    assert params.train.steps == 12 and params.name == "base"
    doc = yaml.safe_load(out.read_text())
    assert doc["extends"] == "base.yaml" and set(doc) >= {"train", "model", "tuned"}

    # MLflow: a parent run for the study, one nested run per trial with its FID.
    client = MlflowClient(mlflow_server)
    parent_id = params.tuned.mlflow_parent_run_id
    parent = client.get_run(parent_id)
    assert parent.data.tags["optuna.study"] == "tiny" and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_fid"] == pytest.approx(best.values[0])
    assert parent.data.metrics["trials_complete"] == 3
    figures = {f.path for f in client.list_artifacts(parent_id, "study")}
    assert {"study/history.png", "study/summary.json"} <= figures
    runs = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    by_trial = {r.data.tags["optuna.trial"]: r for r in runs}
    assert sorted(by_trial) == ["0", "1", "2"] and len(runs) == 3
    for t in trials:
        r = by_trial[str(t.number)]
        assert r.data.metrics["trial/fid"] == pytest.approx(t.values[0])
        assert r.data.params["train.lr"] == str(t.params["train.lr"])
        assert r.data.tags["optuna.state"] == "COMPLETE"
    assert params.tuned.mlflow_run_id == by_trial[str(best.number)].info.run_id

    # A second run with the same name continues the study: 3 more trials, not 3 again.
    assert main([*argv, "--tracking-uri", mlflow_server, "--trials", "4"]) == 0
    assert len(study_of(project, tune, "tiny").get_trials()) == 4

    # Training from best.yaml tags the run with the trial it came from.
    run_dir = project / "runs" / "from-best"
    assert (
        main(["train", str(out), "--run-dir", str(run_dir), "--tracking-uri", mlflow_server]) == 0
    )
    ref = json.loads((run_dir / "mlflow_run.json").read_text())
    tags = client.get_run(ref["run_id"]).data.tags
    best4 = load_params(out, TrainParams).tuned
    assert tags["optuna.study"] == "tiny" and tags["optuna.trial"] == str(best4.trial)
    assert tags["ganops.tuned_from_run"] == best4.mlflow_run_id


def test_bad_trial_is_pruned(project, mlflow_server, monkeypatch):
    monkeypatch.chdir(project)
    tune = write_tune(
        project,
        "prune",
        trials=2,
        budget={"train.steps": 24},
        pruner={"type": "median", "startup_trials": 1, "warmup_steps": 0},
        space={
            "train.lr": {"low": 1e-7, "high": 3e-3, "log": True},
            "model.width": {"choices": [4, 8]},
        },
    )
    tuning = load_tuning(project / "params" / "base.yaml", tune, root=project)
    study = open_study(tuning)
    # Trial 0 learns; trial 1 is constructed bad: a learning rate that leaves it at its start.
    study.enqueue_trial({"train.lr": 3e-3, "model.width": 8})
    study.enqueue_trial({"train.lr": 1e-7, "model.width": 8})
    argv = ["tune", "params/base.yaml", "--tune-params", str(tune), "--out", "best-prune.yaml"]
    changed = "tune.space.model.width={choices: [4]}"  # another space: not this study
    assert main([*argv, "--tracking-uri", mlflow_server, "--set", changed]) == 2
    assert main([*argv, "--tracking-uri", mlflow_server]) == 0
    good, bad = study_of(project, tune, "prune").get_trials()
    assert good.state == TrialState.COMPLETE
    assert bad.state == TrialState.PRUNED, bad.intermediate_values
    pruned_at = bad.user_attrs["pruned_at"]
    assert pruned_at < 24 and bad.user_attrs["steps_trained"] == pruned_at
    assert bad.intermediate_values[pruned_at] > good.intermediate_values[pruned_at]
    summary = json.loads((project / "runs/tune/prune/summary.json").read_text())
    assert summary["counts"] == {"COMPLETE": 1, "PRUNED": 1}
    assert summary["steps_trained"] == 24 + pruned_at
    client = MlflowClient(mlflow_server)
    ref = json.loads((Path(bad.user_attrs["run_dir"]) / "mlflow_run.json").read_text())
    run = client.get_run(ref["run_id"])
    assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "PRUNED"


@pytest.mark.parametrize(
    ("pruner", "bad_state"),
    [
        ({"type": "percentile", "percentile": 25, "startup_trials": 1}, TrialState.PRUNED),
        ({"type": "successive_halving", "reduction_factor": 2}, TrialState.PRUNED),
        # The only rung is the last step: the budget is spent, so the trial completes.
        ({"type": "successive_halving", "min_resource": 24}, TrialState.COMPLETE),
    ],
    ids=["percentile", "successive-halving", "no-pruning-at-the-last-step"],
)
def test_stricter_pruners(project, monkeypatch, pruner, bad_state):
    monkeypatch.chdir(project)
    name = f"prune-{pruner['type']}-{pruner.get('min_resource', 0)}"
    tune = write_tune(project, name, trials=2, budget={"train.steps": 24}, pruner=pruner)
    study = open_study(load_tuning(project / "params" / "base.yaml", tune, root=project))
    study.enqueue_trial({"train.lr": 3e-3, "train.betas.0": 0.5, "model.width": 8})
    study.enqueue_trial({"train.lr": 5e-4, "train.betas.0": 0.5, "model.width": 4})
    argv = ["tune", "params/base.yaml", "--tune-params", str(tune), "--no-track"]
    assert main([*argv, "--out", f"best-{name}.yaml"]) == 0
    good, bad = study_of(project, tune, name).get_trials()
    assert good.state == TrialState.COMPLETE and good.value == good.intermediate_values[24]
    assert bad.state == bad_state, bad.intermediate_values
    if bad_state == TrialState.PRUNED:  # stopped at a report where it was worse
        at = bad.user_attrs["pruned_at"]
        assert at < 24 and at == max(bad.intermediate_values) == bad.user_attrs["steps_trained"]
        assert bad.intermediate_values[at] > good.intermediate_values[at]
    else:
        assert bad.value == bad.intermediate_values[24] > good.value


def test_critic_steps_and_penalty_weight_are_searched(project, monkeypatch):
    """A WGAN-GP study over n_critic and the gradient-penalty weight: each trial trains with
    the values Optuna proposed, and best.yaml carries them."""
    monkeypatch.chdir(project)
    base = yaml.safe_load((project / "params" / "base.yaml").read_text())
    base["model"]["family"] = "wgan-gp"
    base["loss"] = {"type": "wasserstein"}
    (project / "params" / "base-wgan.yaml").write_text(yaml.safe_dump(base))
    space = {
        "loss.n_critic": {"low": 1, "high": 3},
        "loss.gp_weight": {"low": 1.0, "high": 20.0, "log": True},
        "train.lr": {"low": 1e-4, "high": 1e-3, "log": True},
    }
    tune = write_tune(project, "critic", trials=2, budget={"train.steps": 8}, space=space)
    out = project / "best-critic.yaml"
    argv = ["tune", "params/base-wgan.yaml", "--tune-params", str(tune), "--no-track"]
    assert main([*argv, "--out", str(out)]) == 0
    trials = study_of(project, tune, "critic", "base-wgan.yaml").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        used = load_params(Path(t.user_attrs["run_dir"]) / "config.yaml", TrainParams)
        assert used.model.family == "wgan-gp"
        assert used.loss.n_critic == t.params["loss.n_critic"] in (1, 2, 3)
        assert used.loss.gp_weight == pytest.approx(t.params["loss.gp_weight"])
    best = min(trials, key=lambda t: t.values[0])
    tuned = load_params(out, TrainParams)
    assert tuned.loss.n_critic == best.params["loss.n_critic"]
    assert tuned.loss.gp_weight == pytest.approx(best.params["loss.gp_weight"])


def test_two_workers_record_every_trial_once(project):
    tune = write_tune(project, "parallel", trials=4)
    ganops(
        project,
        "tune",
        "params/base.yaml",
        "--tune-params",
        str(tune),
        "--workers",
        "2",
        "--no-track",
        "--out",
        "best-par.yaml",
    )
    trials = study_of(project, tune, "parallel").get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # Each trial trained once, in its own folder, by a child process of its own.
    dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(dirs)) == 4
    for t, d in zip(trials, dirs, strict=True):
        steps = [json.loads(x)["step"] for x in (Path(d) / "stats.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)) and steps[-1] == 12
        assert t.user_attrs["steps_trained"] == 12
    assert len({t.user_attrs["host"] for t in trials}) == 4
    # Two at a time: some trials overlapped in time.
    spans = [(t.datetime_start, t.datetime_complete) for t in trials]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :])
    assert (project / "best-par.yaml").is_file()


def test_killed_trial_is_retried_from_its_checkpoint(project):
    tune = write_tune(project, "killed", trials=1, budget={"train.steps": 400})
    args = [
        "tune",
        "params/base.yaml",
        "--tune-params",
        str(tune),
        "--no-track",
        "--out",
        "best-killed.yaml",
        "--set",
        "train.checkpoint_every=20",
        "--set",
        "train.fid_every=100",
    ]
    trial_dir = project / "runs/tune/killed/trial_0000"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gan_models.cli", *args],
        cwd=project,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not list((trial_dir / "checkpoints").glob("step_*.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = json.loads((trial_dir / "stats.jsonl").read_text().splitlines()[-1])["step"]
    assert first < 400

    # Re-running the study (same name) fails the stale trial and runs its retry.
    out = ganops(project, *args)
    assert "trial 1: COMPLETE" in out.stdout
    killed, retry = study_of(project, tune, "killed").get_trials()
    assert killed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.params == killed.params
    assert retry.system_attrs["failed_trial"] == 0 and retry.user_attrs["retry_of"] == 0
    resumed = retry.user_attrs["resumed_from"]
    assert resumed > 0 and resumed % 20 == 0
    assert retry.user_attrs["steps_trained"] == 400 - resumed
    steps = [json.loads(x)["step"] for x in (trial_dir / "stats.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 401, 2))  # one uninterrupted record
    assert "resumed from step_" in (trial_dir / "log.txt").read_text()


KILL_SEED = 7  # change it to try other kill points; the points it gives are printed


def test_trial_processes_killed_at_any_point_are_failed_and_retried(project):
    """Trial processes SIGKILLed at seeded random points, from the instant their process starts
    (before any heartbeat) to late in training: the controller fails each at once and retries
    it, and the study finishes with every trial recorded once. The grace period is far longer
    than the test: nothing waits for a heartbeat to turn stale."""
    import random
    from datetime import datetime

    import psutil

    tune = write_tune(
        project,
        "kills",
        trials=4,
        budget={"train.steps": 24},
        heartbeat={"interval": 1, "grace_period": 600, "max_retry": 1},
    )
    args = ["tune", "params/base.yaml", "--tune-params", str(tune), "--workers", "2"]
    args += ["--no-track", "--out", "best-kills.yaml", "--set", "train.fid_every=12"]
    rng = random.Random(KILL_SEED)
    # The first three first attempts are killed, each at its own kind of point; retries live.
    plans = [
        ("at process start", 0.0, None),
        ("early, in start-up or first steps", rng.uniform(0.0, 4.0), None),
        ("in training, at a logged step", None, rng.choice(range(2, 21, 2))),
    ]
    print(f"kill plans (seed {KILL_SEED}): {plans}")
    controller = subprocess.Popen(
        [sys.executable, "-m", "gan_models.cli", *args],
        cwd=project,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    storage = load_tuning(project / "params" / "base.yaml", tune, root=project).storage_url
    seen: dict[int, tuple[psutil.Process, float, tuple | None]] = {}  # trial -> proc, t0, plan
    killed: dict[int, dict] = {}
    deadline = time.monotonic() + 600
    try:
        while controller.poll() is None:
            assert time.monotonic() < deadline, "the study did not finish"
            for child in psutil.Process(controller.pid).children():
                with contextlib.suppress(psutil.Error):
                    cmd = child.cmdline()
                    if "--trial" not in cmd:
                        continue
                    number = int(cmd[cmd.index("--trial") + 1])
                    if number in seen:
                        continue
                    study = optuna.load_study(study_name="kills", storage=storage)
                    retry = "failed_trial" in study.trials[number].system_attrs
                    first = [n for n, (_, _, plan) in seen.items() if plan is not None]
                    plan = None if retry or len(first) >= len(plans) else plans[len(first)]
                    seen[number] = (child, time.monotonic(), plan)
            for number, (child, t0, plan) in seen.items():
                if plan is None or number in killed:
                    continue
                _, delay, step = plan
                run_dir = project / "runs/tune/kills" / f"trial_{number:04d}"
                if step is not None:
                    stats = run_dir / "stats.jsonl"
                    lines = stats.read_text().splitlines() if stats.exists() else []
                    if not lines or json.loads(lines[-1])["step"] < step:
                        continue
                elif time.monotonic() - t0 < delay:
                    continue
                child.kill()
                child.wait(timeout=30)
                ckpts = sorted((run_dir / "checkpoints").glob("step_*.pt"))
                killed[number] = {
                    "plan": plan,
                    "at": datetime.now(),
                    "after_s": round(time.monotonic() - t0, 2),
                    "checkpoint": int(ckpts[-1].stem[5:]) if ckpts else 0,
                }
                print(f"killed trial {number}: {killed[number]}")
            time.sleep(0.02)
        out = controller.stdout.read()
    finally:
        if controller.poll() is None:
            controller.kill()
    assert controller.returncode == 0, out
    assert len(killed) == 3, (killed, out)

    trials = study_of(project, tune, "kills").get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(done) == 4 and sorted(t.number for t in failed) == sorted(killed), out
    assert len(trials) == 7  # four trials and one retry of each killed one: nothing else
    # Every trial recorded once: each first attempt ends in exactly one completed trial.
    roots = [t.user_attrs.get("retry_of", t.number) for t in done]
    assert len(set(roots)) == 4
    for number, k in killed.items():
        dead = trials[number]
        assert f"trial {number}: FAIL: its worker ended (exit -9" in out
        # Failed because its worker died, not because a heartbeat went stale (600 s).
        assert (dead.datetime_complete - k["at"]).total_seconds() < 30
        (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == number]
        assert retry.state == TrialState.COMPLETE and retry.params == dead.params
        assert retry.user_attrs["retry_of"] == number
        # The retry resumed from the killed attempt's last checkpoint (none: from scratch).
        assert retry.user_attrs["resumed_from"] == k["checkpoint"]
        assert retry.user_attrs["steps_trained"] == 24 - k["checkpoint"]
        run_dir = Path(retry.user_attrs["run_dir"])
        steps = [json.loads(x)["step"] for x in (run_dir / "stats.jsonl").read_text().splitlines()]
        assert steps == list(range(2, 25, 2))  # one uninterrupted record
    # The first was killed before its process reached the trial: no heartbeat of its own.
    first = min(killed)
    assert "host" not in trials[first].user_attrs
    assert killed[first]["checkpoint"] == 0


def test_ctrl_c_checkpoints_running_trials_and_a_rerun_resumes_them(project):
    """SIGINT to the controller: it interrupts each child once, each trainer checkpoints its last
    completed step, the trials are failed and re-enqueued, and a re-run resumes them there."""
    # Long enough that neither trial can finish between the poll below and the signal (a tiny
    # trial runs about 100 steps/s here).
    budget = 1000
    tune = write_tune(project, "ctrl-c", trials=2, budget={"train.steps": budget})
    args = ["tune", "params/base.yaml", "--tune-params", str(tune), "--workers", "2"]
    args += ["--no-track", "--out", "best-ctrl-c.yaml"]
    args += ["--set", "train.checkpoint_every=25", "--set", "train.fid_every=250"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    controller = subprocess.Popen(
        [sys.executable, "-m", "gan_models.cli", *args],
        cwd=project,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    dirs = [project / "runs/tune/ctrl-c" / f"trial_{n:04d}" for n in (0, 1)]

    def last_step(run_dir: Path) -> int:
        stats = run_dir / "stats.jsonl"
        lines = stats.read_text().splitlines() if stats.exists() else []
        return json.loads(lines[-1])["step"] if lines else 0

    deadline = time.monotonic() + 300
    while not all(last_step(d) >= 6 for d in dirs):
        assert controller.poll() is None and time.monotonic() < deadline, "trials did not start"
        time.sleep(0.05)
    controller.send_signal(signal.SIGINT)  # as Ctrl-C: the children are in sessions of their own
    out = controller.communicate(timeout=120)[0]
    assert controller.returncode != 0, out

    study = study_of(project, tune, "ctrl-c")
    first = [t for t in study.get_trials() if t.number in (0, 1)]
    assert all(t.state == TrialState.FAIL for t in first), out
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert sorted(t.system_attrs["failed_trial"] for t in waiting) == [0, 1]
    stopped = {}
    for d in dirs:
        # The trainer stopped after a completed step and checkpointed that very step.
        log = (d / "log.txt").read_text()
        assert "training interrupted after step " in log, log
        step = int(log.split("training interrupted after step ")[1].split()[0])
        assert 6 <= last_step(d) <= step < budget  # stats are logged every 2 steps
        assert (d / "checkpoints" / f"step_{step:08d}.pt").is_file(), log
        stopped[str(d)] = step

    ganops(project, *args)
    trials = study_of(project, tune, "ctrl-c").get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and len(trials) == 4
    for t in done:
        step = stopped[t.user_attrs["run_dir"]]
        assert t.user_attrs["resumed_from"] == step
        run_dir = Path(t.user_attrs["run_dir"])
        steps = [json.loads(x)["step"] for x in (run_dir / "stats.jsonl").read_text().splitlines()]
        assert steps == list(range(2, budget + 1, 2))


def test_two_objectives_give_a_pareto_front_without_pruning(project, monkeypatch):
    monkeypatch.chdir(project)
    tune = write_tune(
        project, "pareto", trials=2, objectives=["fid", "seconds"], pruner={"type": "median"}
    )
    tuning = load_tuning(project / "params" / "base.yaml", tune, root=project)
    assert tuning.tune.multi_objective and not tuning.tune.prunes
    argv = ["tune", "params/base.yaml", "--tune-params", str(tune), "--no-track"]
    assert main([*argv, "--out", "best-pareto.yaml"]) == 0
    summary = json.loads((project / "runs/tune/pareto/summary.json").read_text())
    assert summary["pareto"] and all(
        set(p["values"]) == {"fid", "seconds"} for p in summary["pareto"]
    )
    fids = [p["values"]["fid"] for p in summary["pareto"]]
    assert summary["best"]["values"]["fid"] == min(fids)
    for t in study_of(project, tune, "pareto").get_trials():
        assert t.intermediate_values == {}  # nothing reported: nothing to prune on


def test_disabled_tuning_and_bad_input(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    tune = write_tune(project, "off")
    out = project / "params" / "best-off.yaml"
    argv = ["tune", "params/base.yaml", "--tune-params", str(tune), "--no-track"]
    assert main([*argv, "--out", str(out), "--when-enabled"]) == 0
    assert load_params(out, TrainParams) == load_params(project / "params/base.yaml", TrainParams)
    assert not (project / "runs/tune/off").exists()

    capsys.readouterr()
    assert main([*argv, "--set", "tune.space.train.nope={low: 1, high: 2}"]) == 2
    assert "train.nope: unknown key 'nope'" in capsys.readouterr().err
    assert main([*argv, "--set", "tune.space.model.width={low: 0, high: 8}"]) == 2
    err = capsys.readouterr().err
    assert "model.width" in err and "tune.space.model.width = 0" in err
    assert main([*argv, "--set", "tune.pruner.type=sometimes"]) == 2
    assert "[tune]: pruner.type" in capsys.readouterr().err
    assert main([*argv, "--set", "train.fid_every=0", "--set", "tune.budget={}"]) == 2
    assert "fid_every" in capsys.readouterr().err


def test_dashboard_serves_the_studies(project):
    import urllib.request

    from gan_models.tracking.server import free_port

    tune = write_tune(project, "tiny")  # the study the first test ran
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gan_models.cli",
            "tune",
            "params/base.yaml",
            "--tune-params",
            str(tune),
            "--dashboard",
            "--port",
            str(port),
        ],  # fmt: skip
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, body = time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{port}/api/studies"
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        assert body is not None, "optuna-dashboard did not answer"
        names = {s["study_name"] for s in body["study_summaries"]}
        assert "tiny" in names
    finally:
        proc.terminate()
        proc.wait(timeout=30)
