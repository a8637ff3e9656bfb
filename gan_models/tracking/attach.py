"""``attach_run``: the MLflow run of a run folder, created now for a folder trained untracked.

Evaluation and registration attach to the run through RUN_DIR/mlflow_run.json; a run folder
trained without tracking gets a finished run carrying what ``tracked_train`` would have logged
(params, lineage tags, data record, run files), so its evaluation and registration keep their
lineage.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from gan_models.errors import GanopsError
from gan_models.tracking.lineage import DATA_UNAVAILABLE, TAG_DATA_VERSION_SOURCE, run_tags
from gan_models.tracking.run_contents import log_data_record, log_params, log_run_files
from gan_models.tracking.run_ref import RUN_REF_FILE, RunRef, read_run_ref, write_run_ref
from gan_models.tracking.store import (
    DEFAULT_EXPERIMENT,
    check_reachable,
    ensure_experiment,
    resolve_tracking_uri,
)
from gan_models.training.params import load_run_config
from gan_models.utils.paths import project_root


def attach_run(
    run_dir: str | Path,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> RunRef:
    """The MLflow run of a run folder; a folder trained without tracking gets a run now.

    The new run carries the params and lineage tags that :func:`tracked_train` would have
    logged, so evaluation and registration of untracked runs keep their lineage.
    """
    run_dir = Path(run_dir)
    uri = resolve_tracking_uri(tracking_uri, run_dir)
    check_reachable(uri)
    ref = read_run_ref(run_dir)
    if ref is not None:
        if ref.tracking_uri != uri:
            raise GanopsError(
                f"{run_dir / RUN_REF_FILE}: the run is tracked at {ref.tracking_uri}, not {uri}"
            )
        return ref
    if not (run_dir / "config.yaml").is_file():
        raise GanopsError(f"{run_dir} is not a training run folder (no config.yaml)")
    params = load_run_config(run_dir / "config.yaml")
    root = project_root()
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(experiment or DEFAULT_EXPERIMENT, uri, root)
    # A finished run may be registered where its data is not (another machine, data removed).
    tags = run_tags(params, run_dir, project=root, require_data=False)
    run_id = client.create_run(experiment_id, run_name=params.name, tags=tags).info.run_id
    log_params(client, run_id, params)
    if tags[TAG_DATA_VERSION_SOURCE] != DATA_UNAVAILABLE:
        log_data_record(client, run_id, params)
    log_run_files(client, run_id, run_dir)
    client.set_terminated(run_id)
    ref = RunRef(run_id, experiment_id, uri, client.get_experiment(experiment_id).name)
    write_run_ref(run_dir, ref)
    return ref
