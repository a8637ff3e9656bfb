"""Optuna studies over GAN training: a study's inputs, its storage, and the controller.

One controller (``ganops tune``) owns a study. It asks Optuna for each trial's params (so one
seeded sampler proposes every trial: the same seed and space propose the same configurations)
and hands the trial to a worker: this process (one worker), local child processes (``workers``
> 1, each with its own GPU when the host has any), or flow runs of the Prefect ``train-trial``
deployment on a work pool (one GPU each, see gan_models/gpu.py; :mod:`.workers`). A worker
runs :func:`gan_models.tuning.trial.run_trial`: it trains with :func:`gan_models.tracking.tracked_train` in a nested MLflow
run, reports FID every ``train.fid_every`` steps (the pruner may stop it there) and tells the
storage the outcome. Nothing but the storage connects the controller and its workers.

Failures: a trial has a heartbeat from the moment it is asked. The controller beats for the
trials its live workers hold until they can beat themselves (a child process that is still
starting, a flow run still waiting on its pool); the trial's own process beats while it trains.
A trial whose worker ends without telling the storage (killed at any point, even before its
first heartbeat) is failed at once by the controller; one whose beats stop otherwise (host lost,
controller gone) turns stale after ``grace_period`` s. Either way it is re-enqueued as Optuna's
RetryHeartbeatStaleTrialCallback does; the retry trains in the first attempt's run folder and so
resumes from its last checkpoint. A trial that raises (diverged, bad params) fails for good.
Re-running a study (same name) continues it to ``trials`` finished trials.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
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
from gan_models.utils.io import write_json_atomic

TUNE_ROOT = Path("runs") / "tune"
TRIAL_DEPLOYMENT = "train/train-trial"
SUMMARY_FILE = "summary.json"
# Study user attrs: what the study was created for, and its MLflow run.
ATTR_SIGNATURE = "ganops.signature"
ATTR_PARENT_RUN = "mlflow_run_id"
ATTR_TRACKING_URI = "mlflow_tracking_uri"


def import_optuna():
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

    def trial_args(self, number: int, parent_run: str | None) -> list[str]:
        """``ganops`` arguments that run trial ``number`` of this study, in any process."""
        return trial_command(
            str(self.base_path),
            str(self.tune_path),
            self.overrides,
            self.study_name,
            self.storage_url,
            number,
            parent_run,
            self.track,
            self.tracking_uri,
        )


def trial_command(
    params: str,
    tune_params: str,
    overrides: list[str],
    study: str,
    storage: str,
    trial: int,
    parent_run: str | None,
    track: bool,
    tracking_uri: str | None,
) -> list[str]:
    """``ganops tune ... --trial N``: a worker that resolves exactly the controller's inputs."""
    args = ["tune", params, "--tune-params", tune_params]
    for item in overrides:
        args += ["--set", item]
    args += ["--study", study, "--storage", storage, "--trial", str(trial)]
    if parent_run:
        args += ["--parent-run", parent_run]
    if not track:
        args.append("--no-track")
    elif tracking_uri:
        args += ["--tracking-uri", tracking_uri]
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
    check_space(tune, base, str(tune_path), train_sets)
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
    optuna = import_optuna()
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
    optuna = import_optuna()
    s = tuning.tune.sampler
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.startup_trials)


def _pruner(tuning: Tuning):
    optuna = import_optuna()
    p, t = tuning.tune.pruner, tuning.tune
    if not t.prunes:
        return optuna.pruners.NopPruner()
    if p.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps
        )
    if p.type == "percentile":
        return optuna.pruners.PercentilePruner(
            p.percentile, n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps
        )
    budget = apply_values(tuning.base, t.budget)
    min_resource = p.min_resource or budget.train.fid_every
    if p.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_resource, reduction_factor=p.reduction_factor
        )
    return optuna.pruners.HyperbandPruner(
        min_resource=min_resource,
        max_resource=budget.train.steps,
        reduction_factor=p.reduction_factor,
    )


def open_study(tuning: Tuning, storage=None, *, sampler=None):
    """Create the study or load it (same name = same study); refuse other inputs under it."""
    optuna = import_optuna()
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


def root_trial_number(frozen) -> int:
    """The first attempt of a retried trial (its run folder is shared by the retries)."""
    optuna = import_optuna()
    history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
    return history[0] if history else frozen.number


def fail_and_retry(study, number: int) -> bool:
    """Fail trial ``number`` if it is still running and enqueue its retry, as Optuna does for a
    stale heartbeat (same params, retry history, intermediate values; ``max_retry`` bounds it).

    For a trial that no live worker holds: its process ended without telling the storage.
    Returns whether this call failed it (another process may have finished it first).
    """
    optuna = import_optuna()
    from optuna.trial import TrialState

    trial = find_trial(study, number)
    if trial.state != TrialState.RUNNING:
        return False
    storage = study._storage  # what optuna.storages.fail_stale_trials uses too
    try:
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:  # told or failed meanwhile elsewhere
        return False
    retry = storage.get_heartbeat_stale_trial_callback()
    if retry is not None:
        retry(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
    return True


def find_trial(study, number: int):
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    raise GanopsError(f"study {study.study_name!r} has no trial {number}")


def display_url(url: str) -> str:
    """A storage URL without its password (it goes into tags and files)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


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
        display_url(tuning.storage_url),
        list(tuning.tune.objectives),
        rows,
        best,
        pareto if tuning.tune.multi_objective else [],
        sum(int(r["steps_trained"] or 0) for r in rows),
        round(sum(float(r["seconds"] or 0) for r in rows), 3),
        parent_run_id,
    )


def _counts(trials) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _final_failures(trials) -> list[Any]:
    """Failed trials that no retry took over."""
    from optuna.trial import TrialState

    # A retry lists every attempt before it (``failed_trial`` names only the first).
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    return [t for t in trials if t.state == TrialState.FAIL and t.number not in retried]


def run_study(
    tuning: Tuning,
    *,
    out: str | Path | None = None,
    echo: Callable[[str], None] = print,
    poll_s: float = 1.0,
) -> StudyReport:
    """Run (or continue) the study until ``tune.trials`` trials have finished; export the best."""
    optuna = import_optuna()
    from optuna.trial import TrialState

    t = tuning.tune
    storage = make_storage(tuning)
    study = open_study(tuning, storage)
    tuning.study_dir.mkdir(parents=True, exist_ok=True)
    from gan_models.tuning.report import log_study, parent_run, write_best
    from gan_models.tuning.workers import InlineWorkers, PrefectWorkers, ProcessWorkers

    parent = parent_run(tuning, study) if tuning.track else None
    if t.pool:
        workers: Any = PrefectWorkers(tuning, parent, t.workers, t.pool)
    elif t.workers > 1:
        workers = ProcessWorkers(tuning, parent, t.workers)
    else:
        workers = InlineWorkers(tuning, parent)
    dists = distributions(tuning)
    where = f"pool {t.pool!r}" if t.pool else f"{t.workers} local worker(s)"
    echo(f"study {tuning.study_name!r} at {display_url(tuning.storage_url)}: {where}")
    waiting_said: set[int] = set()
    beat = study._storage.record_heartbeat
    for x in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # Left running by an earlier controller: from now on its heartbeat turns stale unless
        # a worker of that run still beats for it (a trial once had no heartbeat until its own
        # process began beating, and one whose process died sooner stayed running for ever).
        beat(x._trial_id)
    restore_sigint = _sigint_raises()
    try:
        while True:
            optuna.storages.fail_stale_trials(study)  # dead workers' trials: failed, re-enqueued
            trials = study.get_trials(deepcopy=False)
            counts = _counts(trials)
            finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
            running, waiting = counts.get("RUNNING", 0), counts.get("WAITING", 0)
            failures = _final_failures(trials)
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
                beat(trial._trial_id)  # alive from now: no trial is ever without a heartbeat
                echo(f"trial {trial.number}: {json.dumps(trial_values(tuning, trial.params))}")
                try:
                    workers.start(trial.number)
                except BaseException as e:
                    # Not started (or broken mid-way): no worker will ever tell this trial.
                    # Stopped by Ctrl-C, it is retried when the study is run again.
                    from gan_models.training.loop import TrainingInterrupted

                    with contextlib.suppress(Exception):
                        if isinstance(e, KeyboardInterrupt | TrainingInterrupted):
                            fail_and_retry(study, trial.number)
                        else:
                            study.tell(trial.number, state=TrialState.FAIL)
                    raise
                if workers.inline:  # it has finished: count again
                    _echo_trial(tuning, study, trial.number, echo)
                    ran_inline = True
                    break
                running += 1
                waiting = max(0, waiting - 1)
            for number, how in workers.poll():
                if fail_and_retry(study, number):  # its worker ended without telling the storage
                    echo(
                        f"trial {number}: FAIL: its worker ended ({how}) before the trial did; "
                        "it is retried (from its last checkpoint, if any)"
                    )
                else:
                    _echo_trial(tuning, study, number, echo, how)
            ids = {x.number: x._trial_id for x in study.get_trials(deepcopy=False)}
            for number in workers.held():  # alive, and maybe not beating for itself yet
                beat(ids[number])
            if ran_inline:
                continue
            if workers.busy() == 0 and running > 0:  # left running by a worker that died
                for x in trials:
                    if x.state == TrialState.RUNNING and x.number not in waiting_said:
                        waiting_said.add(x.number)
                        echo(
                            f"trial {x.number} is marked running but no worker of this run has "
                            f"it; it is retried once its heartbeat is {t.heartbeat.grace_period} "
                            "s old"
                        )
            time.sleep(poll_s)
    finally:
        workers.stop()
        restore_sigint()
    report = study_report(tuning, study, parent)
    if out is not None and report.best is not None:
        report.best_file = str(out)
        write_best(out, tuning, report)
    write_json_atomic(tuning.study_dir / SUMMARY_FILE, report_dict(report))
    if parent:
        log_study(tuning, study, parent, report)
    return report


def _sigint_raises() -> Callable[[], None]:
    """Make Ctrl-C (SIGINT) raise KeyboardInterrupt in the controller; returns the undo.

    A process started with SIGINT ignored (a background job of a non-interactive shell, as CI
    runs) gets no such handler from Python, and its study could then only be killed, leaving its
    trials running; the trainer installs its own handler for the same reason.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    return lambda: signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def _echo_trial(tuning, study, number, echo, how: str = "ok") -> None:
    t = find_trial(study, number)
    fid = t.user_attrs.get("fid")
    extra = f" at step {t.user_attrs['pruned_at']}" if t.user_attrs.get("pruned_at") else ""
    if t.user_attrs.get("error"):
        extra += f": {t.user_attrs['error']}"
    elif how != "ok" and t.state.name == "RUNNING":
        extra += f" (worker ended: {how})"
    fid_text = f", FID {fid:.2f}" if fid is not None else ""
    echo(f"trial {number}: {t.state.name}{extra}{fid_text}")


def report_dict(report: StudyReport) -> dict[str, Any]:
    from dataclasses import asdict

    return {**asdict(report), "counts": report.counts()}
