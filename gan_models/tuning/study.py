"""Optuna studies over GAN training: the controller that runs a study and the trial runner.

One controller (``ganops tune``) owns a study. It asks Optuna for each trial's params (so one
seeded sampler proposes every trial: the same seed and space propose the same configurations)
and hands the trial to a worker: this process (one worker), local child processes (``workers``
> 1, each with its own GPU when the host has any), or flow runs of the Prefect ``train-trial``
deployment on a work pool (one GPU each, see gan_models/gpu.py). A worker runs
:func:`run_trial`: it trains with :func:`gan_models.tracking.tracked_train` in a nested MLflow
run, reports FID every ``train.fid_every`` steps (the pruner may stop it there) and tells the
storage the outcome. Nothing but the storage connects the controller and its workers.

Failures: a running trial sends heartbeats; one whose process dies (killed, host lost) turns
stale after ``grace_period`` s, is marked failed and re-enqueued by Optuna's
RetryHeartbeatStaleTrialCallback; the retry trains in the first attempt's run folder and so resumes
from its last checkpoint. A trial that raises (diverged, bad params) fails for good.
Re-running a study (same name) continues it to ``trials`` finished trials.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gan_models.config import (
    TrainParams,
    apply_overrides,
    load_params,
    read_params_yaml,
    validate_model,
)
from gan_models.errors import ConfigError, GanopsError
from gan_models.tuning.config import TuneParams, apply_values, check_space, choice_value
from gan_models.utils.io import write_json_atomic, write_text_atomic

TUNE_ROOT = Path("runs") / "tune"
TRIAL_DEPLOYMENT = "train/train-trial"
SUMMARY_FILE = "summary.json"
# Study user attrs: what the study was created for, and its MLflow run.
ATTR_SIGNATURE = "ganops.signature"
ATTR_PARENT_RUN = "mlflow_run_id"
ATTR_TRACKING_URI = "mlflow_tracking_uri"


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The controller asks and the worker beats (see heartbeat()), not Study.optimize.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


# ----------------------------------------------------------------------------- inputs


@dataclass
class Tuning:
    """A study's resolved inputs, shared by the controller and its workers."""

    base_path: Path  # the training params the trials start from
    tune_path: Path  # params/tune.yaml
    overrides: list[str]  # the --set items as given (tune.* and training keys)
    tune: TuneParams
    base: TrainParams  # base_path with the training overrides, before the budget
    root: Path  # project root: relative paths are relative to it
    study_name: str
    storage_url: str
    track: bool = True
    tracking_uri: str | None = None

    @property
    def study_dir(self) -> Path:
        return self.root / TUNE_ROOT / self.study_name

    def trial_dir(self, root_number: int) -> Path:
        return self.study_dir / f"trial_{root_number:04d}"

    def worker_args(self) -> list[str]:
        """``ganops tune`` arguments that make a worker resolve exactly these inputs."""
        args = [str(self.base_path), "--tune-params", str(self.tune_path)]
        for item in self.overrides:
            args += ["--set", item]
        args += ["--study", self.study_name, "--storage", self.storage_url]
        if not self.track:
            args.append("--no-track")
        elif self.tracking_uri:
            args += ["--tracking-uri", self.tracking_uri]
        return args


def signature(tune: TuneParams, base: TrainParams) -> str:
    """What makes two runs the same study: training params, budget, space and objectives."""
    blob = {
        "base": base.model_copy(update={"name": None, "tuned": None}).to_dict(),
        "budget": tune.budget,
        "space": {k: v.model_dump(mode="json") for k, v in sorted(tune.space.items())},
        "objectives": tune.objectives,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:8]


def load_tuning(
    base_path: str | Path,
    tune_path: str | Path = "params/tune.yaml",
    overrides: list[str] | None = None,
    *,
    study: str | None = None,
    storage: str | None = None,
    trials: int | None = None,
    workers: int | None = None,
    pool: str | None = None,
    track: bool = True,
    tracking_uri: str | None = None,
    root: Path | None = None,
) -> Tuning:
    """Read and check a study's inputs: ``tune.*`` overrides go to params/tune.yaml, the rest
    to the training params. Raises ConfigError naming the file and key on any bad input."""
    from gan_models.tracking.lineage import project_root

    overrides = list(overrides or [])
    tune_sets = [o for o in overrides if o.split("=", 1)[0].startswith("tune.")]
    train_sets = [o for o in overrides if o not in tune_sets]
    tune = _load_tune(Path(tune_path), tune_sets)
    cli = {"study": study, "storage": storage, "trials": trials, "workers": workers, "pool": pool}
    data = tune.model_dump() | {k: v for k, v in cli.items() if v is not None}
    tune = validate_model(TuneParams, data, f"{tune_path} [tune] with the command's options")
    base = load_params(base_path, TrainParams, train_sets)
    check_space(tune, base, str(tune_path))
    root = root or project_root()
    name = tune.study or f"{base.name}-{signature(tune, base)}"
    return Tuning(
        Path(base_path),
        Path(tune_path),
        overrides,
        tune,
        base,
        root,
        name,
        tune.storage_url(root),
        track,
        tracking_uri,
    )


def _load_tune(path: Path, overrides: list[str]) -> TuneParams:
    """The ``tune`` section with ``--set tune.key=value`` applied.

    Space and budget keys hold dots themselves: ``tune.space.train.lr={low: 1e-5, high: 1e-3}``
    replaces the whole entry ``train.lr``.
    """
    import yaml

    whole = ("tune.space.", "tune.budget.")
    data = apply_overrides(
        read_params_yaml(path), [o for o in overrides if not o.startswith(whole)]
    )
    section = data.get("tune")
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: missing section 'tune'")
    for item in overrides:
        if item.startswith(whole):
            key, _, raw = item.partition("=")
            group, _, entry = key[len("tune.") :].partition(".")
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError as e:
                raise ConfigError(f"--set {key}: not valid YAML ({e})") from None
            if not isinstance(section.get(group), dict):
                section[group] = {}
            section[group][entry] = value
    return validate_model(TuneParams, section, f"{path} [tune]")


# ----------------------------------------------------------------------------- storage


def make_storage(tuning: Tuning):
    """The RDB storage with heartbeats and retry of stale trials (resuming their checkpoints)."""
    optuna = _optuna()
    url = tuning.storage_url
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # parallel writers wait
    hb = tuning.tune.heartbeat
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(
        max_retry=hb.max_retry, inherit_intermediate_values=True
    )
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=hb.interval,
            grace_period=hb.grace_period,
            heartbeat_stale_trial_callback=retry,
            **kwargs,
        )
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's many errors: one clear line
        raise ConfigError(f"tune.storage: cannot open {url} ({type(e).__name__}: {e})") from None


def _sampler(tuning: Tuning):
    optuna = _optuna()
    s = tuning.tune.sampler
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.startup_trials)


def _pruner(tuning: Tuning):
    optuna = _optuna()
    p, t = tuning.tune.pruner, tuning.tune
    if not t.prunes:
        return optuna.pruners.NopPruner()
    if p.type == "hyperband":
        budget = apply_values(tuning.base, t.budget)
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource or budget.train.fid_every,
            max_resource=budget.train.steps,
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.MedianPruner(
        n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps
    )


def open_study(tuning: Tuning, storage=None, *, sampler=None):
    """Create the study or load it (same name = same study); refuse other inputs under it."""
    optuna = _optuna()
    storage = storage or make_storage(tuning)
    directions = ["minimize"] * len(tuning.tune.objectives)
    try:
        study = optuna.create_study(
            study_name=tuning.study_name,
            storage=storage,
            sampler=sampler or _sampler(tuning),
            pruner=_pruner(tuning),
            directions=directions,
            load_if_exists=True,
        )
    except ValueError as e:  # e.g. a study of that name with other directions
        raise ConfigError(f"tune.study {tuning.study_name!r}: {e}") from None
    sig = signature(tuning.tune, tuning.base)
    have = study.user_attrs.get(ATTR_SIGNATURE)
    if have is None:
        study.set_user_attr(ATTR_SIGNATURE, sig)
        study.set_user_attr("objectives", list(tuning.tune.objectives))
        study.set_user_attr("base_params", str(tuning.base_path))
    elif have != sig:
        raise ConfigError(
            f"tune.study {tuning.study_name!r} in {tuning.storage_url} was run with other training "
            "params, budget, search space or objectives; give the study another name (tune.study "
            "or --study), or leave tune.study empty for a name derived from the inputs"
        )
    if len(study.directions) != len(directions):
        raise ConfigError(
            f"tune.study {tuning.study_name!r} has {len(study.directions)} objective(s), not "
            f"{len(directions)}; give the study another name"
        )
    return study


def distributions(tuning: Tuning) -> dict[str, Any]:
    return {k: p.distribution() for k, p in tuning.tune.space.items()}


def trial_values(tuning: Tuning, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored params as training-params values (JSON-encoded choices decoded)."""
    return {k: choice_value(params[k], p) for k, p in tuning.tune.space.items() if k in params}


def trial_params(tuning: Tuning, values: dict[str, Any], name: str) -> TrainParams:
    """The training params of a trial: base, then the budget, then the trial's values."""
    params = apply_values(apply_values(tuning.base, tuning.tune.budget), values)
    return params.model_copy(update={"name": name})


def _root_number(frozen) -> int:
    """The first attempt of a retried trial (its run folder is shared by the retries)."""
    optuna = _optuna()
    history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
    return history[0] if history else frozen.number


def _find(study, number: int):
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    raise GanopsError(f"study {study.study_name!r} has no trial {number}")


# ----------------------------------------------------------------------------- trial


@contextlib.contextmanager
def heartbeat(storage, trial_id: int, interval: float) -> Iterator[None]:
    """Record a heartbeat every ``interval`` s while the block runs (what marks a trial alive)."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is only a missed beat
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


class PruningCallback:
    """Reports each training-time FID to the trial; raises TrialPruned when the pruner says so."""

    def __init__(self, trial, prune: bool) -> None:
        self.trial, self.prune = trial, prune
        self.fid: float | None = None
        self.step = 0
        self.first_step: int | None = None

    def __call__(self, info) -> None:  # info: gan_models.training.loop.StepInfo
        if self.first_step is None:
            self.first_step = info.step - 1
        self.step = info.step
        fid = info.metrics.get("fid")
        if fid is None:
            return
        self.fid = float(fid)
        if not self.prune:
            return
        optuna = _optuna()
        self.trial.report(self.fid, info.step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {info.step} (FID {self.fid:.1f})")


def run_trial(tuning: Tuning, number: int, parent_run_id: str | None = None) -> str:
    """Train trial ``number`` (asked by the controller) and tell the storage how it ended.

    Returns the trial's final state name. A trial that is no longer running (already told, e.g.
    a re-delivered flow run) is left alone.
    """
    optuna = _optuna()
    from optuna.trial import TrialState

    storage = make_storage(tuning)
    # The controller sampled the params: this process needs no sampler of its own.
    study = open_study(tuning, storage, sampler=optuna.samplers.RandomSampler())
    frozen = _find(study, number)
    if frozen.state != TrialState.RUNNING:
        return frozen.state.name
    trial = optuna.trial.Trial(study, frozen._trial_id)  # the public Trial of an asked trial
    root = _root_number(frozen)
    run_dir = tuning.trial_dir(root)
    name = f"{tuning.study_name}-trial-{number}"
    params = trial_params(tuning, trial_values(tuning, frozen.params), name)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("host", f"{socket.gethostname()}:{os.getpid()}")
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        trial.set_user_attr("gpu", os.environ["CUDA_VISIBLE_DEVICES"])
    if root != number:
        trial.set_user_attr("retry_of", root)
    cb = PruningCallback(trial, tuning.tune.prunes)
    began = time.perf_counter()
    state, values, error = TrialState.COMPLETE, None, None
    with heartbeat(storage, frozen._trial_id, tuning.tune.heartbeat.interval):
        try:
            result = _train(tuning, params, run_dir, cb, number, root, parent_run_id)
            if cb.fid is None:
                raise GanopsError(f"trial {number}: training reported no FID")
            seconds = result.seconds
            values = [cb.fid if o == "fid" else seconds for o in tuning.tune.objectives]
            trial.set_user_attr("resumed_from", result.resumed_from or 0)
        except optuna.TrialPruned as e:
            state = TrialState.PRUNED
            trial.set_user_attr("pruned_at", cb.step)
            error = str(e)
        except GanopsError as e:
            state, error = TrialState.FAIL, str(e)
            trial.set_user_attr("error", error[:2000])
            trial.set_user_attr("error_kind", "config" if isinstance(e, ConfigError) else "run")
        finally:
            start = cb.first_step or 0
            trial.set_user_attr("steps_trained", max(cb.step - start, 0))
            trial.set_user_attr("seconds", round(time.perf_counter() - began, 3))
            if cb.fid is not None:
                trial.set_user_attr("fid", cb.fid)
        study.tell(number, values, state=state)
    _mark_mlflow(run_dir, state.name, cb.fid, error, tuning)
    return state.name


def _train(tuning, params, run_dir, cb, number, root, parent_run_id):
    if not tuning.track:
        from gan_models.training import train

        return train(params, run_dir, resume="auto", callbacks=[cb])
    from gan_models.tracking import tracked_train
    from gan_models.tracking.lineage import TAG_OPTUNA_STORAGE, TAG_OPTUNA_STUDY, TAG_OPTUNA_TRIAL

    tags = {
        TAG_OPTUNA_STUDY: tuning.study_name,
        TAG_OPTUNA_TRIAL: number,
        TAG_OPTUNA_STORAGE: _display_url(tuning.storage_url),
    }
    if root != number:
        tags["optuna.retry_of"] = root
    experiment = None
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id  # nests the trial under the study's run
        experiment = _parent_experiment(tuning, parent_run_id)
    return tracked_train(
        params,
        run_dir,
        resume="auto",
        callbacks=[cb],
        tags=tags,
        tracking_uri=tuning.tracking_uri,
        experiment=experiment,
        run_name=params.name,
    )


def _display_url(url: str) -> str:
    """A storage URL without its password (it goes into tags and files)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


def _parent_experiment(tuning: Tuning, run_id: str) -> str | None:
    from mlflow.tracking import MlflowClient

    from gan_models.tracking.mlflow_tracking import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(tuning.tracking_uri))
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


def _mark_mlflow(run_dir: Path, state: str, fid: float | None, error, tuning: Tuning) -> None:
    """The trial's MLflow run says how the trial ended (a pruned run is KILLED, not FAILED)."""
    if not tuning.track:
        return
    from mlflow.tracking import MlflowClient

    from gan_models.tracking.mlflow_tracking import read_run_ref

    ref = read_run_ref(run_dir)
    if ref is None:
        return
    client = MlflowClient(ref.tracking_uri)
    client.set_tag(ref.run_id, "optuna.state", state)
    if fid is not None:
        client.log_metric(ref.run_id, "trial/fid", fid)
    if error:
        client.set_tag(ref.run_id, "optuna.reason", str(error)[:5000])
    if state == "PRUNED":
        client.set_terminated(ref.run_id, "KILLED")


# ----------------------------------------------------------------------------- workers


class InlineWorkers:
    """One worker: this process trains each trial before the next is asked."""

    def __init__(self, tuning: Tuning, parent_run_id: str | None) -> None:
        self.tuning, self.parent = tuning, parent_run_id

    def free(self) -> bool:
        return True

    def busy(self) -> int:
        return 0

    def start(self, number: int) -> None:
        run_trial(self.tuning, number, self.parent)

    def poll(self) -> list[tuple[int, str]]:
        return []

    def stop(self) -> None:
        pass


@dataclass
class _Child:
    proc: subprocess.Popen
    gpu_fd: int | None
    log: Path
    started: float = field(default_factory=time.monotonic)


class ProcessWorkers:
    """``workers`` local child processes (``ganops tune ... --trial N``), one GPU each if any.

    Without GPUs the children split the CPU cores between them.
    """

    def __init__(self, tuning: Tuning, parent_run_id: str | None, workers: int) -> None:
        from gan_models.gpu import host_gpus, lock_dir

        self.tuning, self.parent, self.workers = tuning, parent_run_id, workers
        self.gpus = host_gpus()
        self.lock_dir = lock_dir()
        self.children: dict[int, _Child] = {}

    def _take_gpu(self) -> tuple[int | None, int | None]:
        from gan_models.gpu import try_lock

        if not self.gpus:
            return None, None
        for index in self.gpus:
            fd = try_lock(index, self.lock_dir)
            if fd is not None:
                return index, fd
        return None, -1  # every GPU is taken

    def free(self) -> bool:
        if len(self.children) >= self.workers:
            return False
        if not self.gpus:
            return True
        index, fd = self._take_gpu()  # probe: a GPU must be free too
        if fd is None or fd < 0:
            return False
        os.close(fd)
        return True

    def busy(self) -> int:
        return len(self.children)

    def start(self, number: int) -> None:
        index, fd = self._take_gpu()
        env = dict(os.environ)
        if index is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(index)
        else:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            env.setdefault("OMP_NUM_THREADS", str(threads))
        args = [sys.executable, "-m", "gan_models.cli", "tune", *self.tuning.worker_args()]
        args += ["--trial", str(number)]
        if self.parent:
            args += ["--parent-run", self.parent]
        log = self.tuning.study_dir / "logs" / f"trial_{number:04d}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                args, cwd=self.tuning.root, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.children[number] = _Child(proc, fd if fd is not None and fd >= 0 else None, log)

    def poll(self) -> list[tuple[int, str]]:
        ended = []
        for number, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            if child.gpu_fd is not None:
                os.close(child.gpu_fd)
            del self.children[number]
            ended.append((number, "ok" if code == 0 else f"exit {code}: {_tail(child.log)}"))
        return ended

    def stop(self) -> None:
        for child in self.children.values():
            child.proc.terminate()
        for child in self.children.values():
            try:
                child.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.proc.kill()
            if child.gpu_fd is not None:
                os.close(child.gpu_fd)
        self.children.clear()


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class PrefectWorkers:
    """Trials as flow runs of the ``train-trial`` deployment on a Prefect work pool.

    The pool's workers decide where each runs; each flow run holds one GPU of its host.
    """

    def __init__(self, tuning: Tuning, parent_run_id: str | None, workers: int, pool: str) -> None:
        if not os.environ.get("PREFECT_API_URL"):
            raise ConfigError(
                f"tune.pool: {pool!r} needs a Prefect server: set PREFECT_API_URL (`ganops up` "
                "starts one) or set tune.pool to null for local workers"
            )
        self.tuning, self.parent, self.workers, self.pool = tuning, parent_run_id, workers, pool
        self.runs: dict[int, Any] = {}

    def free(self) -> bool:
        return len(self.runs) < self.workers

    def busy(self) -> int:
        return len(self.runs)

    def start(self, number: int) -> None:
        from prefect.deployments import run_deployment

        t = self.tuning
        parameters = {
            "params": str(t.base_path),
            "overrides": [],
            "trial_of": {
                "tune_params": str(t.tune_path),
                "overrides": t.overrides,
                "study": t.study_name,
                "storage": t.storage_url,
                "trial": number,
                "parent_run": self.parent,
                "track": t.track,
                "tracking_uri": t.tracking_uri,
            },
            "project_dir": str(t.root),
        }
        try:
            run = run_deployment(
                TRIAL_DEPLOYMENT,
                parameters=parameters,
                timeout=0,
                flow_run_name=f"{t.study_name}-trial-{number}",
                tags=["ganops", "tune", t.study_name],
            )
        except Exception as e:  # noqa: BLE001 - no deployment, server gone: one clear line
            raise GanopsError(
                f"tune.pool {self.pool!r}: cannot start a {TRIAL_DEPLOYMENT} flow run ({e}); "
                "deploy the flows (`ganops up`) or set tune.pool to null"
            ) from None
        self.runs[number] = run.id

    def poll(self) -> list[tuple[int, str]]:
        from prefect.client.orchestration import get_client

        ended = []
        with get_client(sync_client=True) as client:
            for number, run_id in list(self.runs.items()):
                state = client.read_flow_run(run_id).state
                if state is None or not state.is_final():
                    continue
                del self.runs[number]
                ended.append((number, "ok" if state.is_completed() else state.name))
        return ended

    def stop(self) -> None:
        self.runs.clear()  # the flow runs go on; a re-run of the study picks up their results


# ----------------------------------------------------------------------------- controller


@dataclass
class StudyReport:
    study: str
    storage: str
    objectives: list[str]
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    pareto: list[dict[str, Any]]
    steps_trained: int
    seconds: float
    parent_run_id: str | None = None
    best_file: str | None = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t["state"]] = out.get(t["state"], 0) + 1
        return out


def _trial_row(tuning: Tuning, t) -> dict[str, Any]:
    a = t.user_attrs
    return {
        "number": t.number,
        "state": t.state.name,
        "values": dict(zip(tuning.tune.objectives, t.values, strict=True)) if t.values else None,
        "params": trial_values(tuning, t.params),
        "fid": a.get("fid"),
        "steps_trained": a.get("steps_trained", 0),
        "seconds": a.get("seconds", 0.0),
        "pruned_at": a.get("pruned_at"),
        "retry_of": a.get("retry_of"),
        "resumed_from": a.get("resumed_from"),
        "error": a.get("error"),
        "run_dir": a.get("run_dir"),
    }


def study_report(tuning: Tuning, study, parent_run_id: str | None = None) -> StudyReport:
    from optuna.trial import TrialState

    rows = [_trial_row(tuning, t) for t in study.get_trials(deepcopy=False)]
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    pareto = [_trial_row(tuning, t) for t in study.best_trials] if done else []
    best = None
    if done:
        winner = (
            study.best_trial
            if not tuning.tune.multi_objective
            else min(study.best_trials, key=lambda t: t.values[0])
        )
        best = _trial_row(tuning, winner)
    return StudyReport(
        tuning.study_name,
        _display_url(tuning.storage_url),
        list(tuning.tune.objectives),
        rows,
        best,
        pareto if tuning.tune.multi_objective else [],
        sum(int(r["steps_trained"] or 0) for r in rows),
        round(sum(float(r["seconds"] or 0) for r in rows), 3),
        parent_run_id,
    )


def _counts(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _final_failures(study) -> list[Any]:
    """Failed trials that no retry took over."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    return [t for t in trials if t.state == TrialState.FAIL and t.number not in retried]


def run_study(
    tuning: Tuning,
    *,
    out: str | Path | None = None,
    echo: Callable[[str], None] = print,
    poll_s: float = 1.0,
) -> StudyReport:
    """Run (or continue) the study until ``tune.trials`` trials have finished; export the best."""
    optuna = _optuna()
    from optuna.trial import TrialState

    t = tuning.tune
    storage = make_storage(tuning)
    study = open_study(tuning, storage)
    tuning.study_dir.mkdir(parents=True, exist_ok=True)
    parent = _parent_run(tuning, study) if tuning.track else None
    if t.pool:
        workers: Any = PrefectWorkers(tuning, parent, t.workers, t.pool)
    elif t.workers > 1:
        workers = ProcessWorkers(tuning, parent, t.workers)
    else:
        workers = InlineWorkers(tuning, parent)
    dists = distributions(tuning)
    where = f"pool {t.pool!r}" if t.pool else f"{t.workers} local worker(s)"
    echo(f"study {tuning.study_name!r} at {_display_url(tuning.storage_url)}: {where}")
    waiting_said: set[int] = set()
    try:
        while True:
            optuna.storages.fail_stale_trials(study)  # dead workers' trials: failed, re-enqueued
            counts = _counts(study)
            finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
            running, waiting = counts.get("RUNNING", 0), counts.get("WAITING", 0)
            failures = _final_failures(study)
            config = [f for f in failures if f.user_attrs.get("error_kind") == "config"]
            if config:
                raise ConfigError(config[0].user_attrs.get("error", "bad trial params"))
            if len(failures) >= t.max_failures:
                raise GanopsError(
                    f"study {tuning.study_name!r}: {len(failures)} trials failed (tune.max_failures "
                    f"= {t.max_failures}); last: {failures[-1].user_attrs.get('error', 'process died')}"
                )
            if finished >= t.trials and workers.busy() == 0:
                break
            ran_inline = False
            while workers.free() and (waiting > 0 or finished + running < t.trials):
                trial = study.ask(fixed_distributions=dists)  # a re-enqueued retry comes first
                echo(f"trial {trial.number}: {json.dumps(trial_values(tuning, trial.params))}")
                workers.start(trial.number)
                if isinstance(workers, InlineWorkers):  # it has finished: count again
                    _echo_trial(tuning, study, trial.number, echo)
                    ran_inline = True
                    break
                running += 1
                waiting = max(0, waiting - 1)
            for number, how in workers.poll():
                _echo_trial(tuning, study, number, echo, how)
            if ran_inline:
                continue
            if workers.busy() == 0 and running > 0:  # left running by a worker that died
                for x in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    if x.number not in waiting_said:
                        waiting_said.add(x.number)
                        echo(
                            f"trial {x.number} is marked running but no worker of this run has "
                            f"it; it is retried once its heartbeat is {t.heartbeat.grace_period} "
                            "s old"
                        )
            time.sleep(poll_s)
    finally:
        workers.stop()
    report = study_report(tuning, study, parent)
    if out is not None and report.best is not None:
        report.best_file = str(out)
        write_best(out, tuning, report)
    write_json_atomic(tuning.study_dir / SUMMARY_FILE, _report_dict(report))
    if parent:
        _log_study(tuning, study, parent, report)
    return report


def _echo_trial(tuning, study, number, echo, how: str = "ok") -> None:
    t = _find(study, number)
    fid = t.user_attrs.get("fid")
    extra = f" at step {t.user_attrs['pruned_at']}" if t.user_attrs.get("pruned_at") else ""
    if t.user_attrs.get("error"):
        extra += f": {t.user_attrs['error']}"
    elif how != "ok" and t.state.name == "RUNNING":
        extra += f" (worker ended: {how})"
    fid_text = f", FID {fid:.2f}" if fid is not None else ""
    echo(f"trial {number}: {t.state.name}{extra}{fid_text}")


def _report_dict(report: StudyReport) -> dict[str, Any]:
    from dataclasses import asdict

    return {**asdict(report), "counts": report.counts()}


# ----------------------------------------------------------------------------- outputs


def write_best(out: str | Path, tuning: Tuning, report: StudyReport) -> None:
    """params/best.yaml: the base params file (``extends``) plus the best trial's values."""
    assert report.best is not None
    best = report.best
    values = best["params"]
    params = trial_params(tuning, values, tuning.base.name or "train")
    data = params.to_dict()
    top: dict[str, Any] = {}
    for key in values:
        parts = key.split(".")
        node: Any = data
        path: list[str] = []
        for p in parts:  # up to the first list: lists are written whole
            if isinstance(node, list):
                break
            path.append(p)
            node = node[p]
        cursor = top
        src = data
        for p in path[:-1]:
            cursor = cursor.setdefault(p, {})
            src = src[p]
        cursor[path[-1]] = src[path[-1]]
    tuned = {
        "study": tuning.study_name,
        "trial": best["number"],
        "storage": _display_url(tuning.storage_url),
        "values": best["values"],
        "mlflow_run_id": _trial_run_id(best.get("run_dir")),
        "mlflow_parent_run_id": report.parent_run_id,
    }
    header = (
        f"# The best trial of study {tuning.study_name!r} (trial {best['number']}, "
        + ", ".join(f"{k} {v:.4g}" for k, v in (best["values"] or {}).items())
        + f"), on top of {tuning.base_path}.\n# Written by `ganops tune`; edits are overwritten.\n"
    )
    write_params_file(out, tuning.base_path, tuning.base.name, tuned, top, header)


def write_params_file(
    out: str | Path,
    base_path: str | Path,
    name: str | None,
    tuned: dict[str, Any] | None,
    sections: dict[str, Any],
    header: str,
) -> None:
    import yaml

    out = Path(out)
    rel = os.path.relpath(Path(base_path).resolve(), out.resolve().parent)
    doc: dict[str, Any] = {"extends": rel, "name": name or Path(base_path).stem, "tuned": tuned}
    doc.update(sections)
    write_text_atomic(out, header + yaml.safe_dump(doc, sort_keys=False))


def write_untuned(out: str | Path, base_path: str | Path, base: TrainParams) -> None:
    """params/best.yaml when tuning is off: the base params, unchanged."""
    header = (
        f"# Tuning is off (tune.enabled in params/tune.yaml): the training params are "
        f"{base_path} unchanged.\n# Written by `ganops tune`; edits are overwritten.\n"
    )
    write_params_file(out, base_path, base.name, None, {}, header)


def _trial_run_id(run_dir: str | None) -> str | None:
    if not run_dir:
        return None
    from gan_models.tracking.mlflow_tracking import read_run_ref

    ref = read_run_ref(run_dir)
    return ref.run_id if ref else None


def _parent_run(tuning: Tuning, study) -> str:
    """The study's MLflow run (created once, found again when the study is continued)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from gan_models.tracking.lineage import (
        TAG_OPTUNA_STORAGE,
        TAG_OPTUNA_STUDY,
        git_state,
    )
    from gan_models.tracking.mlflow_tracking import (
        DEFAULT_EXPERIMENT,
        check_reachable,
        ensure_experiment,
        resolve_tracking_uri,
    )

    uri = resolve_tracking_uri(tuning.tracking_uri)
    check_reachable(uri)
    client = MlflowClient(uri)
    have = study.user_attrs.get(ATTR_PARENT_RUN)
    if have and study.user_attrs.get(ATTR_TRACKING_URI) == uri:
        try:
            client.get_run(have)
            client.update_run(have, status="RUNNING")
            return have
        except MlflowException:
            pass  # the run is gone (another store): start a new one
    experiment_id = ensure_experiment(DEFAULT_EXPERIMENT, uri, tuning.root)
    commit, dirty = git_state(tuning.root)
    tags = {
        TAG_OPTUNA_STUDY: tuning.study_name,
        TAG_OPTUNA_STORAGE: _display_url(tuning.storage_url),
        "ganops.kind": "study",
        "ganops.git_commit": commit,
        "ganops.git_dirty": dirty,
        "ganops.base_params": str(tuning.base_path),
    }
    run = client.create_run(experiment_id, run_name=f"tune-{tuning.study_name}", tags=tags)
    run_id = run.info.run_id
    t = tuning.tune
    client.log_param(run_id, "objectives", json.dumps(t.objectives))
    client.log_param(run_id, "trials", t.trials)
    client.log_param(run_id, "sampler", t.sampler.model_dump_json())
    client.log_param(run_id, "pruner", t.pruner.model_dump_json() if t.prunes else "none")
    client.log_param(run_id, "budget", json.dumps(t.budget)[:6000])
    client.log_dict(
        run_id, {k: v.model_dump(mode="json") for k, v in t.space.items()}, "study/space.json"
    )
    study.set_user_attr(ATTR_PARENT_RUN, run_id)
    study.set_user_attr(ATTR_TRACKING_URI, uri)
    return run_id


def study_figures(tuning: Tuning, study) -> dict[str, Any]:
    """Matplotlib figures of the study: history, importances, intermediate FIDs, Pareto front."""
    _optuna()
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots: dict[str, Callable[[], Any]] = {}
    if tuning.tune.multi_objective:
        names = list(tuning.tune.objectives)
        plots["pareto_front.png"] = lambda: vis.plot_pareto_front(study, target_names=names)
    else:
        plots["history.png"] = lambda: vis.plot_optimization_history(study, target_name="FID")
        plots["intermediate_fid.png"] = lambda: vis.plot_intermediate_values(study)
    if len(done) >= 2:
        plots["param_importances.png"] = lambda: vis.plot_param_importances(
            study, target=(lambda t: t.values[0]), target_name="FID"
        )
    figures = {}
    for name, plot in plots.items():
        try:
            ax = plot()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances of a space that did not vary
        fig = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
        fig.set_size_inches(8, 5)
        figures[name] = fig
    return figures


def _log_study(tuning: Tuning, study, parent: str, report: StudyReport) -> None:
    import matplotlib

    matplotlib.use("Agg")  # optuna's matplotlib plots use pyplot
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    client = MlflowClient(study.user_attrs[ATTR_TRACKING_URI])
    for name, fig in study_figures(tuning, study).items():
        client.log_figure(parent, fig, f"study/{name}")
        plt.close(fig)
    client.log_dict(parent, _report_dict(report), "study/summary.json")
    counts = report.counts()
    metrics = {
        "trials_complete": counts.get("COMPLETE", 0),
        "trials_pruned": counts.get("PRUNED", 0),
        "trials_failed": counts.get("FAIL", 0),
        "steps_trained": report.steps_trained,
        "trial_seconds": report.seconds,
    }
    if report.best and report.best["values"]:
        for k, v in report.best["values"].items():
            metrics[f"best_{k}"] = v
        client.set_tag(parent, "optuna.best_trial", str(report.best["number"]))
        for k, v in report.best["params"].items():
            client.set_tag(parent, f"best.{k}", json.dumps(v))
    for k, v in metrics.items():
        client.log_metric(parent, k, float(v))
    client.set_terminated(parent, "FINISHED")
