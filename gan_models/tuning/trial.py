"""One trial of a study, in whichever process trains it (see :mod:`gan_models.tuning.controller`).

The controller has asked for the trial, so its params are in the storage; :func:`run_trial`
trains them with :func:`gan_models.tracking.tracked_train` (a run nested under the study's
MLflow run), reports FID to the pruner every ``train.fid_every`` steps, beats a heartbeat while
it runs and tells the storage how the trial ended. With a checkpoint store (team mode,
:mod:`.checkpoint_store`) the run folder's checkpoints are mirrored to the bucket as they are
written and pulled first when the store's are newer, so a retry resumes on any host.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from gan_models.errors import ConfigError, GanopsError
from gan_models.tuning.checkpoint_store import CheckpointStore
from gan_models.tuning.inputs import Tuning, trial_params, trial_values
from gan_models.tuning.optuna_import import import_optuna
from gan_models.tuning.storage import (
    display_url,
    fail_and_retry,
    find_trial,
    make_storage,
    open_study,
    root_trial_number,
    with_storage_retry,
)


def _set_attr(trial, key: str, value) -> None:
    """A user attr of the trial, waiting out a storage restart."""
    with_storage_retry(lambda: trial.set_user_attr(key, value))


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
        optuna = import_optuna()
        with_storage_retry(lambda: self.trial.report(self.fid, info.step))
        # At the last step the budget is spent: the trial completes with this FID as its value.
        if info.step < info.total_steps and with_storage_retry(self.trial.should_prune):
            raise optuna.TrialPruned(f"pruned at step {info.step} (FID {self.fid:.1f})")


def run_trial(tuning: Tuning, number: int, parent_run_id: str | None = None) -> str:
    """Train trial ``number`` (asked by the controller) and tell the storage how it ended.

    Returns the trial's final state name. A trial that is no longer running (already told, e.g.
    a re-delivered flow run) is left alone.
    """
    optuna = import_optuna()
    from optuna.trial import TrialState

    from gan_models.training.stop import TrainingInterrupted

    storage = make_storage(tuning)
    # The controller sampled the params: this process needs no sampler of its own.
    study = open_study(tuning, storage, sampler=optuna.samplers.RandomSampler())
    frozen = find_trial(study, number)
    if frozen.state != TrialState.RUNNING:
        return frozen.state.name
    trial = optuna.trial.Trial(study, frozen._trial_id)  # the public Trial of an asked trial
    root = root_trial_number(frozen)
    run_dir = tuning.trial_dir(root)
    name = f"{tuning.study_name}-trial-{number}"
    params = trial_params(tuning, trial_values(tuning, frozen.params), name)
    _set_attr(trial, "run_dir", str(run_dir))
    _set_attr(trial, "host", f"{socket.gethostname()}:{os.getpid()}")
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        _set_attr(trial, "gpu", os.environ["CUDA_VISIBLE_DEVICES"])
    if root != number:
        _set_attr(trial, "retry_of", root)
    cb = PruningCallback(trial, tuning.tune.prunes)
    store = CheckpointStore.from_env()
    began = time.perf_counter()
    state, values, error = TrialState.COMPLETE, None, None
    interrupted: BaseException | None = None
    with heartbeat(storage, frozen._trial_id, tuning.tune.heartbeat.interval):
        try:
            if store is not None:
                pulled = store.pull(tuning.study_name, run_dir)  # the first attempt's host died
                if pulled is not None:
                    _set_attr(trial, "pulled_checkpoint", pulled)
            mirror = (
                store.syncing(tuning.study_name, run_dir) if store else contextlib.nullcontext()
            )
            with mirror:
                result = _train(tuning, params, run_dir, cb, number, root, parent_run_id)
            if cb.fid is None:
                raise GanopsError(f"trial {number}: training reported no FID")
            seconds = result.seconds
            values = [cb.fid if o == "fid" else seconds for o in tuning.tune.objectives]
            _set_attr(trial, "resumed_from", result.resumed_from or 0)
        except optuna.TrialPruned as e:
            state = TrialState.PRUNED
            _set_attr(trial, "pruned_at", cb.step)
            error = str(e)
        except (TrainingInterrupted, KeyboardInterrupt) as e:  # Ctrl-C: not the trial's fault
            interrupted = e
        except GanopsError as e:
            state, error = TrialState.FAIL, str(e)
            _set_attr(trial, "error", error[:2000])
            _set_attr(trial, "error_kind", "config" if isinstance(e, ConfigError) else "run")
        finally:
            start = cb.first_step or 0
            _set_attr(trial, "steps_trained", max(cb.step - start, 0))
            _set_attr(trial, "seconds", round(time.perf_counter() - began, 3))
            if cb.fid is not None:
                _set_attr(trial, "fid", cb.fid)
        if interrupted is None:  # a storage restart is waited out: the result is not lost
            with_storage_retry(lambda: study.tell(number, values, state=state))
    if interrupted is not None:
        # Failed and re-enqueued now: its retry resumes from the checkpoint just written.
        fail_and_retry(study, number)
        raise interrupted
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
        TAG_OPTUNA_STORAGE: display_url(tuning.storage_url),
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


def _parent_experiment(tuning: Tuning, run_id: str) -> str | None:
    from mlflow.tracking import MlflowClient

    from gan_models.tracking.store import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(tuning.tracking_uri))
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


def _mark_mlflow(run_dir: Path, state: str, fid: float | None, error, tuning: Tuning) -> None:
    """The trial's MLflow run says how the trial ended (a pruned run is KILLED, not FAILED)."""
    if not tuning.track:
        return
    from mlflow.tracking import MlflowClient

    from gan_models.tracking.run_ref import read_run_ref

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
