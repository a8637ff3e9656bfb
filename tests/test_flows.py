"""The Prefect flows on real DVC projects under prefect_test_harness (a real temporary server).

Scratch checkouts are fresh git + DVC repositories holding a copy of the code and params
(flows.bench.scratch_project), so nothing here touches the workspace.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.testing.utilities import prefect_test_harness

from flows.bench import TINY, scratch_project
from flows.paramfiles import apply_pipeline_params
from flows.params import PipelineParams, PromoteParams, TrainTrialParams
from flows.pipeline import pipeline
from flows.progress import PROGRESS_KEY, PrefectProgress, ProgressArtifact, StatsFollower
from flows.runner import StageFailed, StageUserError, project_env
from flows.tasks import run_stage
from flows.train import train as train_flow
from gan_models.errors import ConfigError
from gan_models.gpu import gpu_slot, host_gpus


@pytest.fixture(scope="session", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=180):
        yield


def sh(args, cwd):
    proc = subprocess.run(args, cwd=cwd, env=project_env(cwd), capture_output=True, text=True)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def task_runs(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


def artifacts(key):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )


# ----------------------------------------------------------------------------- params files


@pytest.fixture
def params_project(tmp_path):
    """dvc.yaml and params/ only: what the params writer reads."""
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "params").mkdir()
    for f in (repo / "params").glob("*.yaml"):
        (tmp_path / "params" / f.name).write_text(f.read_text())
    (tmp_path / "dvc.yaml").write_text((repo / "dvc.yaml").read_text())
    return tmp_path


def test_params_written_where_dvc_reads_them_keeping_comments(params_project):
    p = params_project
    before = (p / "params/data.yaml").read_text()
    changed = apply_pipeline_params(
        p,
        PipelineParams(
            dataset="digits",
            source="digits",
            overrides=[
                "preprocess.image_size=8",
                "train.lr=1e-3",
                "features.domain.epochs=2",
                "params/register.yaml:register.pr_tolerance=0.05",
            ],
        ),  # fmt: skip
    )
    assert changed == {
        "params/data.yaml": ["fetch.source", "fetch.name", "preprocess.image_size"],
        "params/train.yaml": ["data.path", "train.lr"],
        "params/features.yaml": ["features.domain.epochs"],
        "params/register.yaml": ["register.pr_tolerance"],
    }
    data = yaml.safe_load((p / "params/data.yaml").read_text())
    assert data["fetch"] == {"source": "digits", "name": "digits"}
    assert data["preprocess"]["image_size"] == 8
    assert yaml.safe_load((p / "params/train.yaml").read_text())["data"]["path"] == (
        "data/processed/digits"
    )
    after = (p / "params/data.yaml").read_text()
    # Only the changed values differ: comments, nulls, order and the other lines are intact.
    diff = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(diff) == 3 and all("#" in b for _, b in diff[:2])
    assert "image_shape: null" in after
    # The same parameters again change nothing.
    assert apply_pipeline_params(p, PipelineParams(dataset="digits", source="digits")) == {}


def test_bad_override_is_refused_and_nothing_written(params_project):
    p = params_project
    files = {f: f.read_text() for f in (p / "params").glob("*.yaml")}
    with pytest.raises(ConfigError, match=r"params/train.yaml: train.bogus: unknown key"):
        apply_pipeline_params(
            p, PipelineParams(overrides=["preprocess.image_size=8", "train.bogus=1"])
        )
    with pytest.raises(ConfigError, match=r"params/data.yaml \[validate\]: min_count"):
        apply_pipeline_params(p, PipelineParams(overrides=["validate.min_count=many"]))
    with pytest.raises(ConfigError, match="unknown section 'nosuch'"):
        apply_pipeline_params(p, PipelineParams(overrides=["nosuch.key=1"]))
    with pytest.raises(ConfigError, match="model.family: unknown family 'gan9000'"):
        apply_pipeline_params(p, PipelineParams(overrides=["model.family=gan9000"]))
    with pytest.raises(ValueError, match="section.key=value"):
        PipelineParams(overrides=["train.lr"])
    assert {f: f.read_text() for f in (p / "params").glob("*.yaml")} == files
    assert not list((p / "params").glob(".*.tmp"))


def test_preset_replaces_training_sections(params_project):
    p = params_project
    changed = apply_pipeline_params(p, PipelineParams(preset="wgan-gp-mnist5k-small"))
    assert set(changed["params/train.yaml"]) >= {"model", "loss", "train"}
    train = yaml.safe_load((p / "params/train.yaml").read_text())
    preset = yaml.safe_load((p / "params/wgan-gp-mnist5k-small.yaml").read_text())
    assert train["model"] == preset["model"] and train["loss"] == preset["loss"]
    assert train["train"]["steps"] == preset["train"]["steps"]
    assert train["train"]["fid_every"] == 250  # the pipeline's own key is kept
    assert train["data"]["path"] == "data/processed/mnist5k"
    with pytest.raises(ConfigError, match="contradicts the preset"):
        apply_pipeline_params(p, PipelineParams(preset="wgan-gp-mnist5k-small", family="dcgan"))


# ----------------------------------------------------------------------------- stage tasks

FLAKY = """
import pathlib, sys
counter = pathlib.Path("calls.txt")
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
if sys.argv[1] == "user":
    print("error: params.yaml: x: expected a number, got 'abc'", file=sys.stderr)
    sys.exit(2)
if n == 1:
    sys.exit(1)  # a crash the first time: worth a retry
pathlib.Path("out.txt").write_text("done")
"""


@pytest.fixture
def tiny_dvc(tmp_path):
    """A DVC project whose stages are a flaky script and one that refuses its input."""
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "dvc.yaml").write_text(
        textwrap.dedent(
            f"""
            stages:
              flaky:
                cmd: {sys.executable} flaky.py transient
                deps: [flaky.py]
                outs: [out.txt]
              refuses:
                cmd: {sys.executable} flaky.py user
                deps: [flaky.py]
            """
        )
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in ([*git, "init", "-q"], ["dvc", "init", "-q"], [*git, "add", "-A"],
                 [*git, "commit", "-qm", "init"]):  # fmt: skip
        sh(args, tmp_path)
    return tmp_path


def test_transient_stage_failure_is_retried(tiny_dvc):
    @flow
    def one_stage():
        return run_stage.with_options(retry_delay_seconds=0)(str(tiny_dvc), "flaky")

    state = one_stage(return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["status"] == "ran"
    assert (tiny_dvc / "calls.txt").read_text() == "2"  # failed once, retried once
    [run] = task_runs(state.state_details.flow_run_id)
    assert run.run_count == 2
    lock = yaml.safe_load((tiny_dvc / "dvc.lock").read_text())
    assert "flaky" in lock["stages"]  # DVC recorded the successful run


def test_user_error_fails_fast_without_retry(tiny_dvc):
    @flow
    def one_stage():
        return run_stage.with_options(retry_delay_seconds=0)(str(tiny_dvc), "refuses")

    state = one_stage(return_state=True)
    assert state.is_failed()
    assert "error: params.yaml: x: expected a number, got 'abc'" in state.message
    with pytest.raises(StageUserError, match="stage 'refuses': error: params.yaml: x"):
        state.result()
    assert (tiny_dvc / "calls.txt").read_text() == "1"  # not retried
    [run] = task_runs(state.state_details.flow_run_id)
    assert run.run_count == 1 and run.state.is_failed()


def test_dvc_refusal_is_a_user_error(tiny_dvc):
    @flow
    def one_stage():
        return run_stage.with_options(retry_delay_seconds=0)(str(tiny_dvc), "nosuch")

    state = one_stage(return_state=True)
    assert state.is_failed() and "'nosuch' not found" in state.message
    assert task_runs(state.state_details.flow_run_id)[0].run_count == 1


def test_crash_is_reported_with_the_output_tail(tiny_dvc):
    (tiny_dvc / "flaky.py").write_text("import sys; print('boom'); sys.exit(3)\n")

    @flow
    def one_stage():
        return run_stage.with_options(retries=0)(str(tiny_dvc), "flaky")

    state = one_stage(return_state=True)
    with pytest.raises(StageFailed, match=r"(?s)exited with 3.*boom"):
        state.result()


def test_pipeline_refuses_a_bad_override_before_any_stage(tmp_path):
    project = scratch_project(tmp_path / "proj")
    before = (project / "params/train.yaml").read_text()
    began = time.monotonic()
    state = pipeline(
        overrides=["train.steps=4", "train.bogus=1"], project_dir=str(project), return_state=True
    )
    assert state.is_failed()
    assert "params/train.yaml: train.bogus: unknown key" in state.message
    assert time.monotonic() - began < 60
    assert (project / "params/train.yaml").read_text() == before
    assert not (project / "dvc.lock").exists()  # no stage ran
    names = [r.name for r in task_runs(state.state_details.flow_run_id)]
    assert names and all(n.startswith("configure") for n in names)


# Each override names a section and a key its params model does not have: the flow refuses it.
TYPOS = {
    "fetch.typo=1": r"params/data.yaml \[fetch\]: typo: unknown key",
    "validate.min_cuont=5": r"params/data.yaml \[validate\]: min_cuont: unknown key",
    "preprocess.imgae_size=8": r"params/data.yaml \[preprocess\]: imgae_size: unknown key",
    "features.domain.epoch=2": r"params/features.yaml \[features\]: domain.epoch: unknown key",
    "evaluate.n_sample=10": r"params/evaluate.yaml \[evaluate\]: n_sample: unknown key",
    "register.marign=1": r"params/register.yaml \[register\]: marign: unknown key",
    "tune.trails=3": r"params/tune.yaml \[tune\]: trails: unknown key",
    "model.widht=8": r"params/train.yaml: model.widht: unknown key",
    "fetchh.name=x": r"unknown section 'fetchh'",
    "params/data.yaml:nosuch.key=1": r"unknown section 'nosuch'",
}


@pytest.mark.parametrize("override", sorted(TYPOS))
def test_unknown_override_key_or_section_is_refused_naming_it(params_project, override):
    p = params_project
    files = {f: f.read_bytes() for f in (p / "params").glob("*.yaml")}
    with pytest.raises(ConfigError, match=TYPOS[override]):
        # A valid change first: it must not be written either.
        apply_pipeline_params(p, PipelineParams(overrides=["train.lr=1e-3", override]))
    assert {f: f.read_bytes() for f in (p / "params").glob("*.yaml")} == files
    assert not [f for f in (p / "params").iterdir() if f.suffix != ".yaml"]


def test_pipeline_flow_fails_on_a_fetch_typo_with_one_line(tmp_path):
    project = scratch_project(tmp_path / "proj")
    before = (project / "params/data.yaml").read_text()
    state = pipeline(
        source="digits", overrides=["fetch.typo=1"], project_dir=str(project), return_state=True
    )
    assert state.is_failed()
    assert "params/data.yaml [fetch]: typo: unknown key" in state.message
    assert len(str(state.message).strip().splitlines()) == 1
    assert (project / "params/data.yaml").read_text() == before  # fetch.source not written
    assert not (project / "dvc.lock").exists()


def test_knobs_and_a_preset_by_name_go_into_the_training_params(params_project):
    p = params_project
    changed = apply_pipeline_params(
        p,
        PipelineParams(
            family="wgan-gp", preset="wgan-gp-mnist5k-small", source="digits", steps=40,
            batch_size=16, lr=1e-3, seed=7,
        ),
    )  # fmt: skip
    assert changed["params/data.yaml"] == ["fetch.source", "fetch.name"]
    train = yaml.safe_load((p / "params/train.yaml").read_text())
    assert train["model"]["family"] == "wgan-gp"
    assert (train["train"]["steps"], train["train"]["batch_size"]) == (40, 16)
    assert (train["train"]["lr"], train["train"]["seed"]) == (1e-3, 7)
    assert train["data"]["path"] == "data/processed/digits"  # a source alone names the dataset
    assert yaml.safe_load((p / "params/data.yaml").read_text())["fetch"]["name"] == "digits"


def test_form_values_out_of_their_lists_or_bounds_are_refused():
    from pydantic import ValidationError

    for bad in ({"family": "gan9000"}, {"preset": "dcgan-mnist5k-tiny"}, {"source": "folder"},
                {"steps": 0}, {"batch_size": 5000}, {"lr": 0}, {"seed": -1}):  # fmt: skip
        with pytest.raises(ValidationError):
            PipelineParams(**bad)
    state = pipeline(family="gan9000", return_state=True)
    assert state.is_failed() and "family" in state.message


def test_run_form_schema_has_top_level_selects_and_bounded_numbers():
    """What Prefect's "Custom run" form is built from (the deployment's parameter schema)."""
    from prefect.utilities.callables import parameter_schema

    from gan_models.data.sources import SOURCES
    from gan_models.families import FAMILIES
    from gan_models.training.params import find_presets

    schema = parameter_schema(pipeline).model_dump()
    props = schema["properties"]
    assert list(props)[:8] == [
        "family", "preset", "source", "dataset", "steps", "batch_size", "lr", "seed",
    ]  # fmt: skip

    def choices(name):  # a select: the choices and a blank (None: keep the params files')
        assert props[name]["enum"][-1] is None and props[name]["default"] is None
        return props[name]["enum"][:-1]

    assert sorted(choices("family")) == sorted(FAMILIES)
    presets = [Path(f).stem for ps in find_presets("params").values() for f, _ in ps]
    assert sorted(choices("preset")) == sorted(presets) and "dcgan-mnist5k-small" in presets
    assert "digits" in choices("source") and set(choices("source")) <= set(SOURCES)
    assert choices("tune") == [True, False]

    def number(name):  # a number input with its bounds (switched on from None)
        [n] = [a for a in props[name]["anyOf"] if a.get("type") in ("integer", "number")]
        return n

    assert number("steps")["type"] == "integer" and number("steps")["minimum"] == 1
    assert number("batch_size")["maximum"] == 4096
    assert number("lr")["type"] == "number" and number("lr")["exclusiveMinimum"] == 0
    assert number("seed")["minimum"] == 0
    assert "params" not in props  # no nested object of free strings any more
    assert "train.steps" in props["steps"]["description"]


def test_tune_switch_goes_into_the_tune_params(params_project):
    p = params_project
    changed = apply_pipeline_params(p, PipelineParams(tune=True))
    assert changed == {"params/tune.yaml": ["tune.enabled"]}
    assert yaml.safe_load((p / "params/tune.yaml").read_text())["tune"]["enabled"] is True
    assert apply_pipeline_params(p, PipelineParams()) == {}  # empty keeps the file's choice
    before = (p / "params/tune.yaml").read_text()
    with pytest.raises(ConfigError, match=r"params/tune.yaml \[tune\]: pruner.type"):
        apply_pipeline_params(p, PipelineParams(overrides=["tune.pruner.type=sometimes"]))
    assert (p / "params/tune.yaml").read_text() == before
    with pytest.raises(ValueError, match="run_dir .* or trial_of"):
        TrainTrialParams(params="params/train.yaml")


# ----------------------------------------------------------------------------- GPU slots

HOLD = """
import sys, time
from gan_models.gpu import gpu_slot
with gpu_slot([0, 1], folder=sys.argv[1], poll_s=0.1) as i:
    print(i, time.time(), flush=True)
    time.sleep(float(sys.argv[2]))
print("released", time.time(), flush=True)
"""


def _holder(folder, hold_s):
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(hold_s)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def test_concurrent_runs_get_different_gpus_and_the_third_waits(tmp_path):
    first, second = _holder(tmp_path, 4), _holder(tmp_path, 4)
    a = first.stdout.readline().split()
    b = second.stdout.readline().split()
    assert {a[0], b[0]} == {"0", "1"}  # two concurrent runs, two different GPUs
    third = _holder(tmp_path, 0)
    c = third.stdout.readline().split()
    released = min(float(p.stdout.readline().split()[1]) for p in (first, second))
    assert c[0] in {"0", "1"} and float(c[1]) >= released  # it waited for a free GPU
    for p in (first, second, third):
        p.wait(timeout=30)


def test_a_killed_run_releases_its_gpu(tmp_path):
    holder = _holder(tmp_path, 600)
    assert holder.stdout.readline().split()[0] == "0"
    with pytest.raises(TimeoutError), gpu_slot([0], folder=tmp_path, poll_s=0.1, timeout_s=0.5):
        pass
    holder.kill()
    holder.wait()
    with gpu_slot([0], folder=tmp_path, timeout_s=5) as i:
        assert i == 0


def test_a_cpu_host_holds_nothing(monkeypatch):
    monkeypatch.setenv("GANOPS_GPUS", "")
    assert host_gpus() == []
    with gpu_slot() as i:
        assert i is None
    monkeypatch.setenv("GANOPS_GPUS", "2,5")
    assert host_gpus() == [2, 5]


GPU_ENV = """
import os, time
time.sleep(2)  # long enough for the two stages to overlap
open("gpu.txt", "w").write(os.environ.get("CUDA_VISIBLE_DEVICES", "none"))
"""


def test_concurrent_stages_each_see_only_their_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("GANOPS_GPUS", "0,1")
    monkeypatch.setenv("GANOPS_GPU_LOCK_DIR", str(tmp_path / "locks"))
    projects = []
    for name in ("a", "b"):
        proj = tmp_path / name
        proj.mkdir()
        (proj / "gpu_env.py").write_text(GPU_ENV)
        (proj / "dvc.yaml").write_text(
            f"stages:\n  train:\n    cmd: {sys.executable} gpu_env.py\n    outs: [gpu.txt]\n"
        )
        sh(["git", "init", "-q"], proj)
        sh(["dvc", "init", "-q"], proj)
        projects.append(proj)

    @flow
    def two_trainings():
        futures = [run_stage.submit(str(p), "train", gpu=True) for p in projects]
        return [f.result() for f in futures]

    results = two_trainings()
    seen = [(p / "gpu.txt").read_text() for p in projects]
    assert sorted(seen) == ["0", "1"]  # each process saw one GPU, not the same one
    assert [str(r["gpu"]) for r in results] == seen


def test_train_flow_hands_its_gpu_to_the_training_process(tmp_path, monkeypatch):
    monkeypatch.setenv("GANOPS_GPUS", "3")
    monkeypatch.setenv("GANOPS_GPU_LOCK_DIR", str(tmp_path / "locks"))
    # A user error in the training process: it fails fast, and it ran with the slot's GPU.
    state = train_flow(
        TrainTrialParams(params="nosuch.yaml", run_dir="runs/x", project_dir=str(tmp_path)),
        return_state=True,
    )
    assert state.is_failed() and "error: nosuch.yaml: params file not found" in state.message
    [run] = task_runs(state.state_details.flow_run_id)
    assert run.run_count == 1
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs are shipped in batches
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    assert any("runs on GPU 3" in log.message for log in logs)


# ----------------------------------------------------------------------------- progress


def test_stats_follower_reports_only_the_new_session(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train: {steps: 100}\n")
    (run / "stats.jsonl").write_text(json.dumps({"step": 100}) + "\n")  # an earlier run's
    seen = []
    f = StatsFollower(run, lambda s, t: seen.append((s, t)))
    f.poll()
    assert seen == []
    time.sleep(0.01)
    (run / "config.yaml").write_text("train: {steps: 40}\n")  # a new session starts
    (run / "stats.jsonl").write_text(json.dumps({"step": 10}) + "\n" + '{"step": 2')
    f.poll()
    assert seen == [(10, 40)]  # the half-written line waits
    with open(run / "stats.jsonl", "a") as out:
        out.write("0}\n" + json.dumps({"step": 40, "fid": 1.0}) + "\n")
    f.poll()
    assert seen == [(10, 40), (40, 40)]


def test_trainer_callback_updates_a_progress_artifact(tmp_path):
    import numpy as np

    from gan_models.data.format import write_imageset
    from gan_models.training import train
    from gan_models.training.params import TrainParams

    images = np.random.default_rng(0).integers(0, 255, (32, 1, 8, 8)).astype(np.uint8)
    write_imageset(tmp_path / "noise", {"images": images}, meta={"name": "noise", "source": "test"})
    params = TrainParams(
        data={"path": str(tmp_path / "noise"), "image_size": 8},
        model={"family": "dcgan", "width": 8, "latent_dim": 8},
        train={"steps": 4, "batch_size": 8, "log_every": 2, "progress": False, "device": "cpu"},
    )
    seen = []

    class Recording(PrefectProgress):
        def __call__(self, info):
            super().__call__(info)
            seen.append(self.artifact.last)

    @flow
    def train_in_process():
        train(params, tmp_path / "run", callbacks=[Recording(key="progress-test")])

    assert train_in_process(return_state=True).is_completed()
    assert seen == [None, 50.0, 50.0, 100.0]  # updated at the logged steps 2 and 4
    [art] = artifacts("progress-test")
    assert art.type == "progress" and float(art.data) == 100.0


def test_progress_artifact_key_is_valid():
    a = ProgressArtifact()
    assert a.key == PROGRESS_KEY and PROGRESS_KEY.lower() == PROGRESS_KEY


# ----------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowproj")
    project = scratch_project(root / "proj")
    old = os.environ.get("GANOPS_CACHE_DIR")
    os.environ["GANOPS_CACHE_DIR"] = str(root / "cache")  # evaluation's reference cache
    params = {
        "dataset": "digits",
        "source": "digits",
        "overrides": [*TINY, *TINY_TUNE],
        "tune": True,
        "project_dir": str(project),
    }
    state = pipeline(**params, return_state=True)
    yield project, params, state
    if old is None:
        os.environ.pop("GANOPS_CACHE_DIR", None)
    else:
        os.environ["GANOPS_CACHE_DIR"] = old


STAGES = ["fetch", "validate", "preprocess", "features", "tune", "train", "evaluate", "register"]
# A two-trial study over the learning rate, trained as TINY trains.
TINY_TUNE = [
    "tune.study=flowtest",
    "tune.trials=2",
    "tune.budget={train.steps: 4, train.fid_every: 2, train.fid_samples: 50}",
    "tune.sampler.type=random",
    "tune.pruner.type=none",
    "tune.space={train.lr: {low: 1.0e-4, high: 3.0e-3, log: true}}",
]


@pytest.mark.slow
def test_pipeline_runs_every_stage_registers_and_gates(pipeline_run):
    project, _, state = pipeline_run
    assert state.is_completed(), state.message
    result = state.result()
    assert [s["stage"] for s in result["stages"]] == STAGES
    assert all(s["status"] == "ran" for s in result["stages"])
    metrics = json.loads((project / "runs/train/metrics.json").read_text())
    assert metrics["fid"]["value"] > 0 and metrics["lineage"]["n_fake"] == 100
    reg = result["registration"]
    assert (reg["model"], reg["version"], reg["decision"]) == ("dcgan-digits", "1", "promoted")
    from mlflow.tracking import MlflowClient

    # No tracking server here: the runs and the registry are the project's sqlite store.
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias("dcgan-digits", "champion").version) == "1"
    run_ref = json.loads((project / "runs/train/mlflow_run.json").read_text())
    assert client.get_model_version("dcgan-digits", "1").run_id == run_ref["run_id"]
    # The model traces back to the tuning trial whose learning rate it trained with.
    best = yaml.safe_load((project / "params/best.yaml").read_text())
    assert best["tuned"]["study"] == "flowtest" and best["extends"] == "train.yaml"
    tags = client.get_model_version("dcgan-digits", "1").tags
    assert tags["optuna.study"] == "flowtest" and tags["optuna.trial"] == str(
        best["tuned"]["trial"]
    )
    trained = yaml.safe_load((project / "runs/train/config.yaml").read_text())
    assert trained["train"]["lr"] == best["train"]["lr"] and trained["train"]["steps"] == 4
    [trials] = artifacts("tune-trials")
    assert "flowtest: 2 complete" in trials.description


@pytest.mark.slow
def test_dvc_repro_afterwards_has_nothing_to_do(pipeline_run):
    project = pipeline_run[0]
    out = sh(["dvc", "repro"], project)
    assert "Running stage" not in out and "up to date" in out
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params/train.yaml"]["train"]["steps"] == 4
    assert lock["stages"]["tune"]["params"]["params/tune.yaml"]["tune"]["enabled"] is True


@pytest.mark.slow
def test_summary_and_progress_artifacts(pipeline_run):
    project, _, state = pipeline_run
    metrics = json.loads((project / "runs/train/metrics.json").read_text())
    [summary] = artifacts("pipeline-summary")
    fid = metrics["fid"]
    assert (
        f"{fid['value']:.4g} [{fid['ci95']['low']:.4g}, {fid['ci95']['high']:.4g}]" in summary.data
    )
    assert "| train | ran |" in summary.data
    assert "dcgan-digits version 1: **promoted**" in summary.data
    [progress] = artifacts("training-progress")
    assert float(progress.data) == 100.0
    assert "step 4/4" in progress.description


@pytest.mark.slow
def test_rerun_skips_every_stage(pipeline_run):
    project, params, _ = pipeline_run
    result = pipeline(**params)
    assert result["changed"] == {}
    assert {s["stage"]: s["status"] for s in result["stages"]} == dict.fromkeys(STAGES, "skipped")
    assert result["registration"]["version"] == "1"  # nothing registered twice


@pytest.mark.slow
def test_promote_flow_registers_again_and_the_gate_refuses_a_tie(pipeline_run):
    from flows.promote import promote

    project = pipeline_run[0]
    result = promote(PromoteParams(run_dir="runs/train", project_dir=str(project)))
    reg = result["registration"]
    assert (reg["model"], reg["version"], reg["decision"]) == ("dcgan-digits", "2", "rejected")
    assert "not lower" in reg["reason"]  # the same generator: equal FID is no improvement
    [summary] = artifacts("promotion")
    assert "dcgan-digits version 2: **rejected**" in summary.data


@pytest.mark.slow
def test_data_failure_in_a_stage_fails_fast(pipeline_run):
    project, params, _ = pipeline_run
    bad = {**params, "overrides": [*TINY, "validate.min_count=100000"]}
    began = time.monotonic()
    state = pipeline(**bad, return_state=True)
    assert state.is_failed()
    assert "stage 'validate': error: validate digits: FAILED" in state.message
    runs = {r.name: r for r in task_runs(state.state_details.flow_run_id)}
    assert runs["validate"].run_count == 1  # a data error is not retried
    assert time.monotonic() - began < 120


# ----------------------------------------------------------------------------- augment flow


def test_augment_flow_runs_the_experiment_and_publishes_its_report(tmp_path):
    """The flow runs `ganops augment` in the project and puts its table and conclusion in an
    artifact; the figures are those the command wrote."""
    from bars import write_processed_bars
    from test_augment import GENERATOR

    from flows.augment import augment
    from flows.params import AugmentFlowParams
    from gan_models.metrics.config import FeaturesParams
    from gan_models.metrics.extractors import train_features

    data = write_processed_bars(tmp_path / "data" / "processed" / "bars")
    train_features(
        data,
        FeaturesParams(domain={"epochs": 4, "batch_size": 16, "width": 8, "hidden": 16}),
        tmp_path / "models/features/bars",
    )
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "cgan-bars.yaml").write_text(yaml.safe_dump(GENERATOR))
    settings = {
        "data": "data/processed/bars",
        "k": [4],
        "seeds": 2,
        "ratios": [1],
        "classifier": {"steps": 4, "batch_size": 8, "width": 4, "hidden": 8},
        "generator": {"params": "params/cgan-bars.yaml", "n_samples": 24},
        "workers": 1,
    }
    (tmp_path / "params" / "augment.yaml").write_text(yaml.safe_dump({"augment": settings}))
    state = augment(
        AugmentFlowParams(
            project_dir=str(tmp_path), arms=["synthetic"], overrides=["augment.seeds=3"]
        ),
        return_state=True,
    )
    assert state.is_completed(), state.message
    table = (tmp_path / "reports/augment/bars/table.md").read_text()
    assert "| synthetic-1x |" in table and "| classical |" not in table  # --arm went through
    results = json.loads((tmp_path / "reports/augment/bars/results.json").read_text())
    assert len(results["summary"]["k4"]["real"]["seeds"]) == 3  # the override went through
    [artifact] = artifacts("augment-report")
    assert "| synthetic-1x |" in artifact.data and "Against real only" in artifact.data
    with pytest.raises(ValueError, match="no FILE: part"):
        AugmentFlowParams(overrides=["params/augment.yaml:augment.k=[4]"])
