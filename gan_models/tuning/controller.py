"""The controller of a study: ask Optuna for trials, hand them to workers, watch for failures.

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
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gan_models.errors import ConfigError, GanopsError
from gan_models.tuning.inputs import SUMMARY_FILE, Tuning, distributions, trial_values
from gan_models.tuning.optuna_import import import_optuna
from gan_models.tuning.report import log_study, parent_run, write_best
from gan_models.tuning.storage import (
    STORAGE_OUTAGE_S,
    display_url,
    fail_and_retry,
    find_trial,
    make_storage,
    open_study,
    storage_errors,
)
from gan_models.tuning.summary import StudyReport, report_dict, study_report
from gan_models.tuning.workers import InlineWorkers, PrefectWorkers, ProcessWorkers
from gan_models.utils.io import write_json_atomic


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
    outage_since: float | None = None
    try:
        while True:
            try:
                # dead workers' trials: failed, re-enqueued
                optuna.storages.fail_stale_trials(study)
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
                        from gan_models.training.stop import TrainingInterrupted

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
                    if fail_and_retry(
                        study, number
                    ):  # its worker ended without telling the storage
                        echo(
                            f"trial {number}: FAIL: its worker ended ({how}) before the trial did; "
                            "it is retried (from its last checkpoint, if any)"
                        )
                    else:
                        _echo_trial(tuning, study, number, echo, how)
                if hasattr(workers, "abandon"):  # flow runs whose host died hold no trial now
                    retried = {n for x in trials for n in x.system_attrs.get("retry_history", ())}
                    for number in workers.abandon(retried):
                        echo(f"trial {number}: its host stopped beating; retried elsewhere")
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
            except storage_errors() as e:
                # The storage stopped answering (a PostgreSQL restart): wait for it, then go on
                # where the loop was; what the workers report meanwhile waits in the storage.
                now = time.monotonic()
                if outage_since is None:
                    outage_since = now
                    where = display_url(tuning.storage_url)
                    echo(f"storage {where} does not answer ({type(e).__name__}); waiting")
                elif now - outage_since > STORAGE_OUTAGE_S:
                    raise GanopsError(
                        f"tune.storage: no answer for {STORAGE_OUTAGE_S:.0f} s ({e})"
                    ) from None
                time.sleep(2)
                continue
            if outage_since is not None:
                echo("storage answers again")
                outage_since = None
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
