"""``tracked_train``: :func:`gan_models.training.train` inside an MLflow run.

It writes ``RUN_DIR/mlflow_run.json`` so that the later stages (evaluation, registration) attach
to the same run; where the run goes is :mod:`gan_models.tracking.store`'s choice. Everything
logged once training has begun goes through the run's :class:`Outbox`: training never waits on
the tracking server, and what the server did not take by the end is kept in the run folder for
``ganops mlflow-sync``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gan_models.config import load_params
from gan_models.errors import GanopsError
from gan_models.tracking.figures import read_stats, training_figures
from gan_models.tracking.lineage import run_tags
from gan_models.tracking.outbox import Outbox
from gan_models.tracking.run_contents import data_record, log_params, run_files
from gan_models.tracking.run_ref import RUN_REF_FILE, RunRef, read_run_ref, write_run_ref
from gan_models.tracking.step_logger import MlflowLogger
from gan_models.tracking.store import (
    DEFAULT_EXPERIMENT,
    check_reachable,
    ensure_experiment,
    resolve_tracking_uri,
    using_tracking_uri,
)
from gan_models.training.checkpoint import latest_checkpoint
from gan_models.training.loop import StepInfo, TrainResult, train
from gan_models.training.params import TrainParams
from gan_models.training.run_dir import restart_reason
from gan_models.utils.paths import project_root


def _start(
    ref: RunRef | None,
    experiment_id: str,
    run_name: str | None,
    tags: dict[str, str],
    log_system_metrics: bool,
):
    """Start (or resume) the run, nested under the caller's active run when there is one."""
    active = mlflow.active_run()
    return mlflow.start_run(
        run_id=ref.run_id if ref else None,
        experiment_id=None if ref else experiment_id,
        run_name=None if ref else run_name,
        nested=active is not None,
        tags=tags,
        log_system_metrics=log_system_metrics,
    )


def _leave_run(run_id: str) -> None:
    """End the active fluent run here without asking the server.

    ``mlflow.end_run`` sets the status on the server (minutes of retries when it is gone) and
    joins the system-metrics thread, which may be stuck in those retries itself; MLflow would
    also try again at exit. The status is pending with the rest (the sync sets it), and the
    system metrics still buffered are dropped. Uses the fluent module's internals (MLflow 3.17);
    should they change, this falls back to ``end_run``.
    """
    from mlflow.environment_variables import MLFLOW_RUN_ID
    from mlflow.tracking import fluent

    try:
        stack = fluent._active_run_stack.get()
        monitors = fluent.run_id_to_system_metrics_monitor
    except AttributeError:
        mlflow.end_run()
        return
    if stack and stack[-1].info.run_id == run_id:
        MLFLOW_RUN_ID.unset()
        stack.pop()
    monitor = monitors.pop(run_id, None)
    if monitor is not None:
        event = getattr(monitor, "_shutdown_event", None)
        if event is not None:
            event.set()  # its thread is a daemon: it ends with its request or the process


def _finish(run_id: str, status: str, outbox: Outbox | None, wait: float | None) -> None:
    """Flush the outbox (a bounded wait) and end the run: on the server when everything got
    there, else recorded as pending with what did not."""
    pending = []
    if outbox is not None:
        end = {"kind": "end", "status": status, "end_time": int(time.time() * 1000)}
        pending = outbox.close(wait, end=end)
    if pending:
        _leave_run(run_id)
    else:
        mlflow.end_run(status)


def tracked_train(
    params: TrainParams | str | Path,
    run_dir: str | Path,
    *,
    resume: bool | Literal["auto"] = False,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    tags: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    overrides: Sequence[str] = (),
    run_name: str | None = None,
    log_system_metrics: bool = True,
    flush_timeout: float | None = None,
) -> TrainResult:
    """:func:`gan_models.training.train` inside an MLflow run.

    Logs the flattened params, losses and images/s at every logged step, the ``callbacks``'
    metrics (e.g. ``fid``) per step, system metrics, the sample grids with their steps (image
    series ``samples``), loss/FID figures, the config, spec and data manifest, and lineage tags
    (git commit and dirty flag, data version and its source, params hash, Prefect flow run,
    ``tags`` such as ``optuna.study``/``optuna.trial``). ``resume`` continues the training *and*
    the MLflow run recorded in RUN_DIR/mlflow_run.json. Called inside an active MLflow run (a
    tuning study's), the run is nested under it.
    """
    config_file = None if isinstance(params, TrainParams) else Path(params)
    if not isinstance(params, TrainParams):
        params = load_params(params, TrainParams, list(overrides))
    run_dir = Path(run_dir)
    found = latest_checkpoint(run_dir)
    if found and not resume:  # the trainer would refuse too; refuse before opening a run
        raise GanopsError(
            f"{run_dir} already holds a run (checkpoint at step {found[0]}); "
            "pass --resume to continue it or choose another --run-dir"
        )
    root = project_root()
    lineage = run_tags(params, run_dir, project=root, extra=tags)  # checks the data exists
    if resume == "auto":  # the trainer continues only an unfinished run with the same params
        continuing = found is not None and restart_reason(run_dir, params) is None
    else:
        continuing = bool(resume)
    uri = resolve_tracking_uri(tracking_uri, run_dir if continuing else None)
    check_reachable(uri)
    ref = read_run_ref(run_dir) if continuing else None
    if ref is not None and ref.tracking_uri != uri:
        raise GanopsError(
            f"{run_dir / RUN_REF_FILE}: the run is tracked at {ref.tracking_uri}, not {uri}; "
            "resume with that tracking URI or remove the file to start a new MLflow run"
        )
    client = MlflowClient(uri)
    with using_tracking_uri(uri):
        if ref is not None:
            try:
                client.get_run(ref.run_id)
            except MlflowException:
                raise GanopsError(
                    f"{run_dir / RUN_REF_FILE}: run {ref.run_id} no longer exists at {uri}; "
                    "remove the file to start a new MLflow run"
                ) from None
            experiment_id = ref.experiment_id
        else:
            experiment_id = ensure_experiment(experiment or DEFAULT_EXPERIMENT, uri, root)
        run = _start(ref, experiment_id, run_name or params.name, lineage, log_system_metrics)
        run_id, outbox, status = run.info.run_id, None, "FAILED"
        try:
            name = client.get_experiment(experiment_id).name
            write_run_ref(run_dir, RunRef(run_id, experiment_id, uri, name))
            log_params(client, run_id, params)
            outbox = Outbox(client, run_id, run_dir, tracking_uri=uri)
            if config_file is not None:
                outbox.put_artifact(config_file, "config")
            outbox.put_artifact(data_record(params), "data")
            logger = MlflowLogger(outbox, run_dir)
            result = train(params, run_dir, resume=resume, callbacks=(*callbacks, logger))
            logger.log_grid(result.steps)  # the final grid is written after the last callback
            staging = outbox.staging_dir()
            for fname, fig in training_figures(read_stats(run_dir)).items():
                fig.savefig(staging / fname)
                outbox.put_artifact(staging / fname, "figures")
            for path in run_files(run_dir):
                outbox.put_artifact(path, "run")
            outbox.put_tag("ganops.steps", str(result.steps))
            status = "FINISHED"
        finally:
            _finish(run_id, status, outbox, flush_timeout)
    return result
