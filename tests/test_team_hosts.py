"""GPU hosts join a team deployment: `ganops worker --server URL` on two hosts, a study whose
trials run as flow runs of the `gpu` pool on both, and a host that dies mid-trial.

Everything is real and started here (tests/team_fixtures.py): PostgreSQL, `rclone serve s3`,
the Prefect and MLflow servers in team mode (`ganops up --services FILE`, which also creates the
pool and deploys prefect.yaml through the authenticated API); the second host is a network
namespace in 10.213.11.0/24 whose processes run under their own hostname (`unshare --uts`) in
their own clone of the project, which gets its data by `ganops worker --pull`. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from bars import write_processed_bars
from optuna.trial import TrialState
from team_fixtures import (
    GANOPS,
    ROOT_ONLY,
    clean_env,
    kill_namespace,
    namespace_host,
    sh,
    team_services,
)

from gan_models.services.s3 import client as s3_client

REPO = Path(__file__).resolve().parents[1]
HOST2 = "ganops-host2"
BASE = "params/base-hosts.yaml"
pytestmark = [ROOT_ONLY, pytest.mark.slow]


def populate(root: Path) -> None:
    """The flows, params and prefect.yaml of the checkout; 8x8 bars and their domain classifier
    (DVC-tracked, so the second host pulls them); training params with relative paths."""
    from gan_models.metrics.config import FeaturesParams
    from gan_models.metrics.extractors import train_features

    for name in ("flows", "params"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "prefect.yaml", root / "prefect.yaml")
    data = write_processed_bars(root / "data" / "processed" / "bars", (("train", 96), ("test", 30)))
    features = FeaturesParams(domain={"epochs": 4, "batch_size": 16, "width": 8, "hidden": 32})
    train_features(data, features, root / "models" / "features" / "bars")
    base = {
        "data": {"path": "data/processed/bars", "split": "train", "image_size": 8},
        "model": {"family": "dcgan", "width": 8, "latent_dim": 8},
        "train": {
            "steps": 12, "batch_size": 16, "lr": 2e-3, "log_every": 2, "checkpoint_every": 4,
            "fid_every": 4, "fid_samples": 48, "fid_features": "models/features/bars",
            "progress": False,
        },
    }  # fmt: skip
    (root / BASE).write_text(yaml.safe_dump(base))
    dvc = [sys.executable, "-m", "dvc"]
    sh(*dvc, "add", "-q", "data/processed/bars", "models/features/bars", cwd=root, env=clean_env())


def write_tune(root: Path, study: str, **over) -> str:
    tune = {
        "study": study,
        # expanded on each host from its own environment (`ganops env`)
        "storage": "${GANOPS_OPTUNA_STORAGE}",
        "pool": "gpu",
        "workers": 2,
        "trials": 2,
        "budget": {"train.steps": 12},
        "sampler": {"type": "random", "seed": 1},
        "pruner": {"type": "none"},
        "heartbeat": {"interval": 1, "grace_period": 10, "max_retry": 2},
        "space": {"train.lr": {"low": 5e-4, "high": 3e-3, "log": True}},
    }
    tune.update(over)
    path = f"params/tune-{study}.yaml"
    (root / path).write_text(yaml.safe_dump({"tune": tune}))
    return path


def publish(root: Path, clone: Path, path: str) -> None:
    """Commit ``path`` here and pull it on the second host: both checkouts hold the same
    params (what `git pull` does on a real host)."""
    sh("git", "add", path, cwd=root)
    sh("git", "commit", "-qm", path, cwd=root)
    sh("git", "pull", "-q", cwd=clone)


class Hosts:
    def __init__(self, team, ns: str, clone: Path, logs: Path):
        self.team, self.ns, self.clone, self.logs = team, ns, clone, logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = clean_env(**team.client, PREFECT_WORKER_QUERY_SECONDS="2", OMP_NUM_THREADS="1")
        self.server = team.client["PREFECT_API_URL"].removesuffix("/api")

    def start_worker(self, which: str) -> None:
        args = [str(GANOPS), "worker", "--server", self.server]
        if which == "here":
            cmd, root = [*args, "--root", str(self.team.root)], self.team.root
        else:
            pulls = ["--pull", "data/processed/bars", "--pull", "models/features/bars"]
            cmd = ["ip", "netns", "exec", self.ns, "unshare", "--uts", "sh", "-c",
                   f'hostname {HOST2} && exec "$0" "$@"', *args, *pulls, "--root",
                   str(self.clone)]  # fmt: skip
            root = self.clone
        log = open(self.logs / f"worker-{which}.log", "ab")  # noqa: SIM115 - the worker's
        self.procs[which] = subprocess.Popen(
            cmd, cwd=root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.wait_online(HOST2 if which == "there" else socket.gethostname())

    def online(self) -> set[str]:
        from prefect.client.orchestration import SyncPrefectClient
        from prefect.client.schemas.objects import WorkerStatus

        api, auth = self.team.client["PREFECT_API_URL"], self.team.client["PREFECT_API_AUTH_STRING"]
        with SyncPrefectClient(api, auth_string=auth) as client:
            workers = client.read_workers_for_work_pool("gpu")
        return {w.name for w in workers if w.status == WorkerStatus.ONLINE}

    def wait_online(self, hostname: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        name = f"ganops-{hostname}-"
        while not any(n.startswith(name) for n in self.online()):
            which = "there" if hostname == HOST2 else "here"
            if self.procs[which].poll() is not None or time.monotonic() > deadline:
                log = (self.logs / f"worker-{which}.log").read_text(errors="replace")
                raise AssertionError(f"worker on {hostname} not online:\n{log[-3000:]}")
            time.sleep(1)

    def stop_worker(self, which: str) -> None:
        proc = self.procs.pop(which, None)
        if proc is None or proc.poll() is not None:
            return
        with_pg = os.getpgid(proc.pid)
        os.killpg(with_pg, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # a Prefect worker may need a second signal
            os.killpg(with_pg, signal.SIGKILL)
            proc.wait()

    def tune(self, tune_file: str, **kw) -> subprocess.Popen:
        cmd = [str(GANOPS), "tune", BASE, "--tune-params", tune_file, "--tracking-uri",
               self.team.client["MLFLOW_TRACKING_URI"]]  # fmt: skip
        return subprocess.Popen(cmd, cwd=self.team.root, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip

    def s3(self):
        c = self.team.client
        return s3_client(c["AWS_ENDPOINT_URL"], c["AWS_ACCESS_KEY_ID"], c["AWS_SECRET_ACCESS_KEY"])

    def keys(self, prefix: str) -> list[str]:
        pages = (
            self.s3().get_paginator("list_objects_v2").paginate(Bucket="ganops-test", Prefix=prefix)
        )
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def study(self, name: str):
        storage = optuna.storages.RDBStorage(self.team.client["GANOPS_OPTUNA_STORAGE"])
        return optuna.load_study(study_name=name, storage=storage)


@contextlib.contextmanager
def team_hosts():
    """The team services on a veth address, the project committed and pushed, and its clone for
    the second host (a network namespace); no worker runs yet, every one is stopped at the end."""
    with namespace_host("ganops-hosts", "10.213.11") as (ns, bind, _):  # noqa: SIM117
        with team_services(bind, "ganops-hosts-", populate) as team:
            root = team.root
            sh("git", "add", "-A", cwd=root)
            sh("git", "commit", "-qm", "project", cwd=root)
            sh(sys.executable, "-m", "dvc", "push", "-q", cwd=root, env=clean_env())
            clone = root.parent / "host2" / "proj"
            sh("git", "clone", "-q", str(root), str(clone))
            logs = root.parent / "logs"
            logs.mkdir()
            h = Hosts(team, ns, clone, logs)
            try:
                yield h
            finally:
                for which in list(h.procs):
                    h.stop_worker(which)
                kill_namespace(ns)


@pytest.fixture(scope="module")
def hosts():
    with team_hosts() as h:
        h.start_worker("here")
        h.start_worker("there")
        yield h


def test_up_team_creates_the_pool_and_deploys_with_auth(hosts):
    out = hosts.team.up_output
    assert "work pool 'gpu': created (type process)" in out
    assert "deployments of prefect.yaml on pool 'gpu': pipeline" in out and "train-trial" in out
    # the second host pulled what the deployments need, with the team's keys only
    got = sorted(p.name for p in (hosts.clone / "data/processed/bars/train").iterdir())
    want = sorted(p.name for p in (hosts.team.root / "data/processed/bars/train").iterdir())
    assert got == want and got
    assert (hosts.clone / "models/features/bars").is_dir()


def test_worker_refuses_bad_credentials_in_one_line(hosts, tmp_path):
    wrong = {**hosts.env, "PREFECT_API_AUTH_STRING": "ganops:wrong"}
    none = clean_env(GANOPS_SECRETS_FILE=str(tmp_path / "absent.env"))
    cases = [
        (["--server", hosts.server], wrong, "error: PREFECT_API_AUTH_STRING: refused by the "
         f"Prefect API at {hosts.server}/api (HTTP 401)"),
        (["--server", hosts.server], none, "error: PREFECT_API_AUTH_STRING: not set"),
        (["--server", hosts.server, "--pool", "cpu"], hosts.env, "error: work pool 'cpu': not "
         "found"),
        (["--server", hosts.server, "--slots", "0"], hosts.env, "error: --slots: expected 1 or "
         "more, got 0"),
    ]  # fmt: skip
    for args, env, line in cases:
        out = sh(str(GANOPS), "worker", *args, "--root", str(hosts.clone), check=False, env=env,
                 cwd=hosts.clone)  # fmt: skip
        lines = (out.stdout + out.stderr).strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith(line), lines


def test_a_study_runs_one_trial_on_each_host(hosts):
    tune = write_tune(hosts.team.root, "hosts")
    publish(hosts.team.root, hosts.clone, tune)
    proc = hosts.tune(tune)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    trials = hosts.study("hosts").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, out
    where = {t.user_attrs["host"].split(":")[0] for t in trials}
    assert where == {socket.gethostname(), HOST2}, (where, out)
    # each trial trained in the checkout of the host that ran it
    for t in trials:
        folder = Path(t.user_attrs["run_dir"])
        on_host2 = t.user_attrs["host"].startswith(HOST2)
        assert folder.is_relative_to(hosts.clone if on_host2 else hosts.team.root), folder
    # both trials' MLflow artifacts are in the bucket (proxied: the hosts hold no server keys)
    from mlflow.tracking import MlflowClient

    os.environ.update({k: hosts.team.client[k] for k in ("MLFLOW_TRACKING_USERNAME",
                                                          "MLFLOW_TRACKING_PASSWORD")})  # fmt: skip
    try:
        client = MlflowClient(hosts.team.client["MLFLOW_TRACKING_URI"])
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            "tags.`optuna.study` = 'hosts'",
        )
    finally:
        for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(k, None)
    trial_runs = [r for r in runs if "optuna.trial" in r.data.tags]
    assert len(trial_runs) == 2
    # each trial's MLflow run names the machine that trained it, as its Optuna trial does
    by_trial = {t.number: t for t in trials}
    for r in trial_runs:
        trial = by_trial[int(r.data.tags["optuna.trial"])]
        assert r.data.tags["ganops.host"] == trial.user_attrs["host"].split(":")[0], r.data.tags
    keys = hosts.keys("mlflow/")
    for r in trial_runs:
        assert any(f"/{r.info.run_id}/artifacts/" in k for k in keys), r.info.run_id
    # and each trial's checkpoints reached the checkpoint store
    for n in (0, 1):
        assert hosts.keys(f"checkpoints/hosts/trial_{n:04d}/checkpoints/step_"), n


def test_the_pipeline_deployment_on_the_second_host_registers_a_champion(hosts):
    """The pipeline deployment (tiny digits), run by the second host's worker alone in its own
    clone: its stages track to the team MLflow with the client credentials, the registered
    model gets the `champion` alias, and the run's artifacts are in the bucket."""
    import base64
    import json
    import urllib.parse
    import urllib.request

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flows.bench import TINY

    root, clone, client = hosts.team.root, hosts.clone, hosts.team.client
    # what the pipeline needs beyond the fixture's project: its stages and the code they hash
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "gan_models", root / "gan_models", ignore=ignore)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    sh("git", "add", "gan_models", "dvc.yaml", ".dvcignore", cwd=root)
    sh("git", "commit", "-qm", "the pipeline", cwd=root)
    sh("git", "pull", "-q", cwd=clone)
    hosts.stop_worker("here")  # only the second host serves the pool
    params = {"dataset": "digits", "source": "digits", "overrides": TINY, "project_dir": "."}
    settings = {PREFECT_API_URL: client["PREFECT_API_URL"],
                PREFECT_API_AUTH_STRING: client["PREFECT_API_AUTH_STRING"]}  # fmt: skip
    try:
        with temporary_settings(settings):
            run = run_deployment("pipeline/pipeline", parameters=params, timeout=420,
                                 poll_interval=2)  # fmt: skip
    finally:
        hosts.start_worker("here")
    log = (hosts.logs / "worker-there.log").read_text(errors="replace")
    assert run.state.is_completed(), f"{run.state.type}: {run.state.message}\n{log[-4000:]}"
    # the second host's worker (hostname ganops-host2) ran it, in its clone; the flow run
    # carries that worker's name (hence the host) as Prefect's label
    assert str(run.id) in log, log[-3000:]
    assert f"ganops-{HOST2}-" in log
    assert run.labels.get("prefect.worker.name", "").startswith(f"ganops-{HOST2}-"), run.labels
    registration = json.loads((clone / "runs/train/registration.json").read_text())
    assert not (root / "runs/train").exists()
    # the champion, read from the team MLflow's REST API with the client credentials
    user, password = client["MLFLOW_TRACKING_USERNAME"], client["MLFLOW_TRACKING_PASSWORD"]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()

    def rest(path: str, **query: str) -> dict:
        url = f"{client['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/{path}?"
        req = urllib.request.Request(url + urllib.parse.urlencode(query))
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    name = registration["model"]
    champion = rest("registered-models/alias", name=name, alias="champion")["model_version"]
    assert str(champion["version"]) == str(registration["version"]), (champion, registration)
    run_id = champion["run_id"]
    tags = {t["key"]: t["value"] for t in rest("runs/get", run_id=run_id)["run"]["data"]["tags"]}
    assert tags["ganops.prefect_flow_run_id"] == str(run.id), tags
    assert tags["ganops.host"] == HOST2, tags  # the machine that trained it
    assert Path(tags["ganops.run_dir"]).resolve().is_relative_to(clone.resolve()), tags
    # its artifacts (the registered model's files among them) are in the bucket
    keys = hosts.keys("mlflow/")
    assert any(f"/{run_id}/artifacts/" in k for k in keys), run_id
    model_id = champion.get("model_id")  # a logged model's files live beside the run's
    assert not model_id or any(f"/{model_id}/artifacts/MLmodel" in k for k in keys), champion


def test_postgres_restarted_during_a_study_loses_no_trial(hosts):
    """PostgreSQL (Optuna's, Prefect's and MLflow's store) stops while both hosts train and
    comes back by `ganops up` again: the controller and the trials wait for it, and the study
    ends with each trial recorded once."""
    import psutil

    from gan_models.services.state import load_state

    team = hosts.team
    tune = write_tune(team.root, "pgrestart")
    publish(team.root, hosts.clone, tune)
    proc = hosts.tune(tune)
    try:
        deadline = time.monotonic() + 240
        while not hosts.keys("checkpoints/pgrestart/"):  # a trial is training
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.3)
        pid = load_state(team.root)["postgres"].pid
        os.kill(pid, signal.SIGINT)  # fast shutdown: every client is disconnected
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.2)
        time.sleep(3)
        up = team.ganops("up", "--services", str(team.services), "--timeout", "180")
        assert "postgres: starting" in up.stdout and up.stdout.count("already running") == 3
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "does not answer" in out and "storage answers again" in out, out
    trials = hosts.study("pgrestart").get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2, [(t.number, t.state.name, t.user_attrs) for t in trials]
    # a trial that failed meanwhile was retried, and no trial finished twice
    firsts = [t.user_attrs.get("retry_of", t.number) for t in done]
    assert len(set(firsts)) == 2, firsts


def test_a_trial_whose_host_dies_resumes_from_its_checkpoint_on_the_other(hosts, tmp_path):
    """Only the second host serves the pool; it dies (every process of its namespace killed)
    once the trial's first checkpoint is in the store; the controller fails the trial when its
    heartbeat turns stale, and its retry runs on this host, from that checkpoint."""
    from gan_models.training import train
    from gan_models.training.checkpoint import latest_checkpoint, load_checkpoint
    from gan_models.tuning.inputs import load_tuning, trial_params, trial_values

    root = hosts.team.root
    hosts.stop_worker("here")
    steps = 300
    tune = write_tune(root, "dies", trials=1, workers=1, budget={"train.steps": steps,
                      "train.checkpoint_every": 20, "train.fid_every": 100})  # fmt: skip
    publish(root, hosts.clone, tune)
    proc = hosts.tune(tune)
    try:
        deadline = time.monotonic() + 240
        prefix = "checkpoints/dies/trial_0000/checkpoints/step_"
        while not hosts.keys(prefix):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.3)
        killed = kill_namespace(hosts.ns)  # the host dies mid-trial
        assert killed
        hosts.procs.pop("there").wait(timeout=30)
        hosts.start_worker("here")
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    first, retry = hosts.study("dies").get_trials()
    assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE, out
    assert first.user_attrs["host"].startswith(f"{HOST2}:")
    assert retry.user_attrs["host"].startswith(f"{socket.gethostname()}:")
    assert retry.user_attrs["retry_of"] == 0 and retry.params == first.params
    resumed = retry.user_attrs["resumed_from"]
    assert resumed > 0 and resumed % 20 == 0 and resumed < steps
    assert retry.user_attrs["pulled_checkpoint"] == resumed  # from the store, not a local file
    assert retry.user_attrs["steps_trained"] == steps - resumed

    # The same trial uninterrupted in one process ends with the same weights (bit for bit on CPU).
    tuning = load_tuning(root / BASE, root / tune, root=root)
    params = trial_params(tuning, trial_values(tuning, first.params), "uninterrupted")
    cwd = os.getcwd()
    os.chdir(root)  # its data and features paths are relative to the checkout
    try:
        train(params, tmp_path / "run")
    finally:
        os.chdir(cwd)
    ours = load_checkpoint(latest_checkpoint(Path(retry.user_attrs["run_dir"]))[1])
    theirs = load_checkpoint(latest_checkpoint(tmp_path / "run")[1])
    assert ours["step"] == theirs["step"] == steps
    for net, state in theirs["nets"].items():
        for k, v in state.items():
            assert torch.equal(ours["nets"][net][k], v), (net, k)
