"""MLflow tracking of training runs and their evaluations.

``tracked_train`` wraps :func:`gan_models.training.train` in an MLflow run and writes
``RUN_DIR/mlflow_run.json`` so that the later stages (evaluation, registration) attach to the
same run. Where the runs go:

1. the ``tracking_uri`` argument;
2. for a run folder that is already tracked, the URI stored in its mlflow_run.json;
3. the ``MLFLOW_TRACKING_URI`` environment variable;
4. ``sqlite:///<project root>/mlflow.db`` with artifacts under ``<project root>/mlartifacts``.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gan_models.config import TrainParams, load_params
from gan_models.errors import GanopsError
from gan_models.tracking.lineage import (
    DATA_UNAVAILABLE,
    TAG_DATA_VERSION_SOURCE,
    dataset_root,
    project_root,
    run_tags,
)
from gan_models.training.checkpoint import latest_checkpoint
from gan_models.training.loop import StepInfo, TrainResult, restart_reason, train
from gan_models.utils.io import write_json_atomic

DEFAULT_EXPERIMENT = "ganops"
RUN_REF_FILE = "mlflow_run.json"
SAMPLES_KEY = "samples"  # the time-stepped image series of sample grids
EVAL_PREFIX = "eval/"  # final evaluation metrics, apart from the per-step ``fid`` curve
# The figures write_evaluation leaves in the folder it writes metrics.json to.
EVAL_FIGURES = ("samples.png", "interpolation.png", "nearest_neighbours.png")
_URI_ENV = "MLFLOW_TRACKING_URI"
_MAX_TAG = 5000  # MLflow's limit on a tag value's length


@dataclass(frozen=True)
class RunRef:
    """Where a run folder's MLflow run lives; stored as RUN_DIR/mlflow_run.json."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    experiment_name: str | None = None


def read_run_ref(run_dir: str | Path) -> RunRef | None:
    """The MLflow run a run folder is tracked in, or None if it has not been tracked."""
    path = Path(run_dir) / RUN_REF_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return RunRef(**{k: data.get(k) for k in RunRef.__dataclass_fields__})
    except (json.JSONDecodeError, TypeError) as e:
        raise GanopsError(f"{path}: not a valid MLflow run reference ({e})") from None


def write_run_ref(run_dir: str | Path, ref: RunRef, **extra: Any) -> None:
    """Write mlflow_run.json atomically, keeping what later stages added (e.g. ``model``)."""
    path = Path(run_dir) / RUN_REF_FILE
    old = json.loads(path.read_text()) if path.is_file() else {}
    if old.get("run_id") != ref.run_id:
        old = {}  # a new run: what was recorded for the old one no longer applies
    write_json_atomic(path, {**old, **asdict(ref), **extra})


def update_run_ref(run_dir: str | Path, **extra: Any) -> None:
    """Add keys to an existing mlflow_run.json (atomically)."""
    ref = read_run_ref(run_dir)
    if ref is None:
        raise GanopsError(f"{run_dir}: no {RUN_REF_FILE}; the run is not tracked")
    write_run_ref(run_dir, ref, **extra)


def run_ref_extra(run_dir: str | Path, key: str) -> Any:
    path = Path(run_dir) / RUN_REF_FILE
    return json.loads(path.read_text()).get(key) if path.is_file() else None


def default_tracking_uri(root: Path | None = None) -> str:
    """``sqlite:///<project root>/mlflow.db``: the embedded store, no server needed."""
    return f"sqlite:///{(root or project_root()) / 'mlflow.db'}"


def resolve_tracking_uri(explicit: str | None = None, run_dir: str | Path | None = None) -> str:
    """The tracking URI to use: argument, the run folder's stored URI, env, embedded default."""
    if explicit:
        return explicit
    if run_dir is not None:
        ref = read_run_ref(run_dir)
        if ref is not None:
            return ref.tracking_uri
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, and clearly, when an HTTP tracking server does not answer.

    MLflow's own client retries for minutes before it gives up on a dead server.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answered (e.g. 401 behind authentication): it is there
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise GanopsError(
            f"the MLflow tracking server {uri} does not answer ({reason}); start one "
            "(`ganops up` or `mlflow server`) or point --tracking-uri / MLFLOW_TRACKING_URI "
            "elsewhere"
        ) from None


def _local_artifact_root(tracking_uri: str, root: Path | None) -> Path | None:
    """Where a local store's artifacts go: beside a sqlite file, else in the project root.

    None for a server (it decides) and for a file store (MLflow keeps them inside it).
    """
    if tracking_uri.startswith("sqlite:///"):
        db = tracking_uri[len("sqlite:///") :]
        if db and db != ":memory:":
            return Path(db).resolve().parent / "mlartifacts"
    if tracking_uri.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
        return (root or project_root()) / "mlartifacts"
    return None


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (and the registry) at ``uri``; restore the previous setting.

    ``mlflow.set_tracking_uri`` also sets MLFLOW_TRACKING_URI for subprocesses: both are put
    back so that one tracked call does not redirect the rest of the process.
    """
    env = os.environ.get(_URI_ENV)

    def restore_env() -> None:
        os.environ.pop(_URI_ENV, None)
        if env is not None:
            os.environ[_URI_ENV] = env

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # a no-op when already None: the env is reset by hand
        restore_env()
        if mlflow.get_tracking_uri() != before:  # it had been set explicitly
            mlflow.set_tracking_uri(before)
            restore_env()


def ensure_experiment(name: str, tracking_uri: str, root: Path | None = None) -> str:
    """The id of experiment ``name``, created if missing.

    With a sqlite store the artifacts go to ``mlartifacts/NAME`` beside the database file (for
    the default store: ``<project root>/mlartifacts``) rather than MLflow's ./mlruns; a server
    decides its own artifact location.
    """
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    base = _local_artifact_root(tracking_uri, root)
    if base is not None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "experiment"
        location = (base / safe).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        exp = client.get_experiment_by_name(name)  # created meanwhile by a parallel process
        if exp is None:
            raise
        return exp.experiment_id


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)  # numpy scalars included


def _param_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) or v is None else str(v)


def _log_params(client: MlflowClient, run_id: str, params: TrainParams) -> None:
    """Log the flattened config; on resume, keys whose value changed become tags.

    MLflow params are write-once, and a resume may legitimately grow ``train.steps``.
    """
    from mlflow.entities import Param

    have = client.get_run(run_id).data.params
    flat = {k: _param_value(v) for k, v in flatten(params.to_dict()).items()}
    new = [Param(k, v) for k, v in flat.items() if k not in have]
    for i in range(0, len(new), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=new[i : i + 100])
    for k, v in flat.items():
        if k in have and have[k] != v:
            client.set_tag(run_id, f"param_update.{k}", v[:_MAX_TAG])


class MlflowLogger:
    """The training callback: losses, images/s, callback metrics and sample grids per step."""

    def __init__(self, client: MlflowClient, run_id: str, run_dir: Path) -> None:
        self.client, self.run_id, self.run_dir = client, run_id, run_dir
        self.logged_grids: set[int] = set()

    def __call__(self, info: StepInfo) -> None:
        values = dict(info.losses)
        if info.images_per_s is not None:
            values["images_per_s"] = info.images_per_s
        values.update({k: v for k, v in info.metrics.items() if _is_number(v)})
        if values:
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, info.step) for k, v in values.items()]
            self.client.log_batch(self.run_id, metrics=metrics)
        self.log_grid(info.step)

    def log_grid(self, step: int) -> None:
        """Log RUN_DIR/samples/step_XXXXXXXX.png as the ``samples`` image at ``step``, once."""
        path = self.run_dir / "samples" / f"step_{step:08d}.png"
        if step in self.logged_grids or not path.is_file():
            return
        from PIL import Image

        with Image.open(path) as img:
            image = img.copy()
        self.client.log_image(self.run_id, image, key=SAMPLES_KEY, step=step, synchronous=True)
        self.logged_grids.add(step)


def read_stats(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "stats.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_figures(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Matplotlib figures of the loss curves and, when evaluated during training, FID."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figures: dict[str, Any] = {}
    loss_keys = sorted({k for s in stats for k in s if "/" in k})
    if loss_keys:
        fig = Figure(figsize=(7, 4), dpi=100)
        ax = fig.add_subplot()
        for k in loss_keys:
            pts = [(s["step"], s[k]) for s in stats if k in s]
            ax.plot(*zip(*pts, strict=True), label=k, marker="." if len(pts) < 20 else None)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        figures["losses.png"] = fig
    fid = [(s["step"], s["fid"]) for s in stats if "fid" in s]
    if fid:
        fig = Figure(figsize=(7, 4), dpi=100)
        ax = fig.add_subplot()
        ax.plot(*zip(*fid, strict=True), marker="o")
        ax.set_xlabel("step")
        ax.set_ylabel("FID")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        figures["fid.png"] = fig
    return figures


def _data_record(params: TrainParams) -> Path:
    return dataset_root(params.data.path, params.data.split)[1]


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
        with _start(ref, experiment_id, run_name or params.name, lineage, log_system_metrics) as r:
            run_id = r.info.run_id
            name = client.get_experiment(experiment_id).name
            write_run_ref(run_dir, RunRef(run_id, experiment_id, uri, name))
            _log_params(client, run_id, params)
            if config_file is not None:
                client.log_artifact(run_id, str(config_file), "config")
            client.log_artifact(run_id, str(_data_record(params)), "data")
            logger = MlflowLogger(client, run_id, run_dir)
            result = train(params, run_dir, resume=resume, callbacks=(*callbacks, logger))
            logger.log_grid(result.steps)  # the final grid is written after the last callback
            for fname, fig in training_figures(read_stats(run_dir)).items():
                mlflow.log_figure(fig, f"figures/{fname}")
            for fname in ("config.yaml", "spec.json", "run.json", "stats.jsonl"):
                if (run_dir / fname).is_file():
                    client.log_artifact(run_id, str(run_dir / fname), "run")
            client.set_tag(run_id, "ganops.steps", str(result.steps))
    return result


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
    params = load_params(run_dir / "config.yaml", TrainParams)
    root = project_root()
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(experiment or DEFAULT_EXPERIMENT, uri, root)
    # A finished run may be registered where its data is not (another machine, data removed).
    tags = run_tags(params, run_dir, project=root, require_data=False)
    run_id = client.create_run(experiment_id, run_name=params.name, tags=tags).info.run_id
    _log_params(client, run_id, params)
    if tags[TAG_DATA_VERSION_SOURCE] != DATA_UNAVAILABLE:
        client.log_artifact(run_id, str(_data_record(params)), "data")
    for fname in ("config.yaml", "spec.json", "run.json", "stats.jsonl"):
        if (run_dir / fname).is_file():
            client.log_artifact(run_id, str(run_dir / fname), "run")
    client.set_terminated(run_id)
    ref = RunRef(run_id, experiment_id, uri, client.get_experiment(experiment_id).name)
    write_run_ref(run_dir, ref)
    return ref


def final_step(run_dir: Path) -> int:
    """The steps a finished run trained for (run.json), else 0."""
    path = run_dir / "run.json"
    return int(json.loads(path.read_text()).get("steps", 0)) if path.is_file() else 0


def evaluation_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Flat name -> number of an evaluation result: its ``summary``, else its numeric leaves."""
    if isinstance(metrics.get("summary"), dict):
        flat = metrics["summary"]
    else:
        body = {k: v for k, v in metrics.items() if k not in ("lineage", "artifacts")}
        flat = {k: v for k, v in flatten(body).items() if ".lineage." not in f".{k}."}
    return {k: float(v) for k, v in flat.items() if _is_number(v)}


def log_evaluation(
    run_dir: str | Path,
    metrics: dict[str, Any],
    *,
    figures: dict[str, str | Path] | Sequence[str | Path] | None = None,
    tracking_uri: str | None = None,
    step: int | None = None,
) -> RunRef:
    """Log a final evaluation (``evaluate_generator``'s result) to the run folder's MLflow run.

    Scalars go in as ``eval/<name>`` metrics at the run's final step (``eval/fid``,
    ``eval/fid_ci_low``, ``eval/fid_ci_high``, ``eval/precision``, ...), the lineage as
    ``eval.lineage.*`` tags, the whole result (less its arrays) as evaluation/metrics.json and
    the ``figures`` (e.g. what ``write_evaluation`` returns; default: its figures found in
    the run folder) under evaluation/.
    """
    run_dir = Path(run_dir)
    ref = attach_run(run_dir, tracking_uri=tracking_uri)
    client = MlflowClient(ref.tracking_uri)
    step = final_step(run_dir) if step is None else step
    now = int(time.time() * 1000)
    scalars = evaluation_scalars(metrics)
    entries = [Metric(f"{EVAL_PREFIX}{k}", v, now, step) for k, v in scalars.items()]
    for i in range(0, len(entries), 1000):
        client.log_batch(ref.run_id, metrics=entries[i : i + 1000])
    lineage = flatten(metrics.get("lineage") or {}, "eval.lineage.")
    for k, v in lineage.items():
        client.set_tag(ref.run_id, k, _param_value(v)[:_MAX_TAG])
    body = {k: v for k, v in metrics.items() if k != "artifacts"}
    client.log_dict(
        ref.run_id, json.loads(json.dumps(body, default=str)), "evaluation/metrics.json"
    )
    if figures is None:
        paths = [run_dir / f for f in EVAL_FIGURES if (run_dir / f).is_file()]
    else:
        paths = list(figures.values() if isinstance(figures, dict) else figures)
    for p in paths:
        if Path(p).suffix != ".json":
            client.log_artifact(ref.run_id, str(p), "evaluation")
    return ref
