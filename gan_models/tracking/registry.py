"""Registering evaluated runs as versions of a registered model.

A registered model is named ``<family>-<dataset>`` (``dcgan-mnist5k``). ``register_run`` adds a
version from a run folder, copies its metrics and lineage onto the version as tags (those the
promotion gate reads among them) and points the ``challenger`` alias at it; promoting it to
``champion`` is :mod:`gan_models.tracking.promotion`'s job.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gan_models.errors import ConfigError, GanopsError
from gan_models.tracking import lineage as L
from gan_models.tracking.attach import attach_run
from gan_models.tracking.card import model_card
from gan_models.tracking.evaluation_log import EVAL_PREFIX, final_step, log_evaluation
from gan_models.tracking.gate import CHALLENGER
from gan_models.tracking.model import MODEL_NAME_IN_RUN, check_run_folder, log_generator_model
from gan_models.tracking.run_ref import run_ref_extra, update_run_ref
from gan_models.tracking.store import using_tracking_uri
from gan_models.training.params import TrainParams, load_run_config
from gan_models.utils.io import sha256_file

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

# Where an evaluation of a run folder is looked for, in order, when no path is given.
METRICS_CANDIDATES = ("metrics.json", "eval/metrics.json", "evaluation/metrics.json")


def model_name_for(params: TrainParams, dataset: str) -> str:
    """``<family>-<dataset>``, e.g. ``dcgan-mnist5k``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{params.model.family}-{dataset}").strip("-")


def find_metrics(run_dir: Path, metrics_path: str | Path | None = None) -> Path:
    if metrics_path is not None:
        if not Path(metrics_path).is_file():
            raise GanopsError(f"{metrics_path}: metrics file not found")
        return Path(metrics_path)
    for rel in METRICS_CANDIDATES:
        if (run_dir / rel).is_file():
            return run_dir / rel
    raise GanopsError(
        f"{run_dir}: no evaluation found (looked for {', '.join(METRICS_CANDIDATES)}); "
        "evaluate the run first or pass the metrics.json path"
    )


def read_metrics(path: Path) -> dict[str, Any]:
    """An evaluation's metrics.json, checked for what registration and the gate need."""
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise GanopsError(f"{path}: not valid JSON ({e})") from None
    need = {
        "fid.value": ("fid", "value"),
        "fid.ci95.low": ("fid", "ci95", "low"),
        "fid.ci95.high": ("fid", "ci95", "high"),
        "precision_recall.precision": ("precision_recall", "precision"),
        "precision_recall.recall": ("precision_recall", "recall"),
    }
    for dotted, keys in need.items():
        node: Any = metrics
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, (int, float)) or isinstance(node, bool):
            raise GanopsError(f"{path}: {dotted} must be a number, got {node!r}")
    return metrics


def version_tags(metrics: dict[str, Any], run_tags: dict[str, str], run_id: str) -> dict[str, str]:
    """The metrics and lineage a version carries: what the gate reads and what traces it back."""
    fid, pr = metrics["fid"], metrics["precision_recall"]
    tags = {
        "fid": fid["value"],
        "fid_ci_low": fid["ci95"]["low"],
        "fid_ci_high": fid["ci95"]["high"],
        "precision": pr["precision"],
        "recall": pr["recall"],
        "fid_floor": (fid.get("floor") or {}).get("value"),
        "run_id": run_id,
    }
    lin = metrics.get("lineage") or {}
    ex = lin.get("extractor") or {}
    tags.update(
        {
            "metrics.extractor": ex.get("name"),
            "metrics.extractor_sha256": ex.get("sha256"),
            "metrics.n_fake": lin.get("n_fake"),
            "metrics.reference_split": lin.get("reference_split"),
            "metrics.seed": lin.get("seed"),
        }
    )
    for k in L.LINEAGE_TAGS:
        if k in run_tags:
            tags[k] = run_tags[k]
    return {k: str(v) for k, v in tags.items() if v is not None}


def _logged_model(client, run_dir: Path, run_id: str, fingerprint: str) -> str | None:
    """The model URI already logged for this run folder with these weights and metrics."""
    known = run_ref_extra(run_dir, "model") or {}
    if known.get("fingerprint") != fingerprint or not known.get("model_id"):
        return None
    try:
        logged = client.get_logged_model(known["model_id"])
    except Exception:  # noqa: BLE001 - deleted or from another server: log it again
        return None
    return known["model_uri"] if logged.source_run_id == run_id else None


def register_run(
    run_dir: str | Path,
    *,
    model_name: str | None = None,
    metrics_path: str | Path | None = None,
    tracking_uri: str | None = None,
) -> ModelVersion:
    """Register a version of a trained, evaluated run folder; alias it ``challenger``.

    Logs the generator to the run's MLflow run unless it is there with the same weights and
    metrics (a tracked run is attached through RUN_DIR/mlflow_run.json; an untracked one gets a
    run now), registers a version of ``model_name`` (default ``<family>-<dataset>``), copies the
    metrics (FID with its CI, precision, recall, floor) and lineage onto it as tags, uses the
    model card as its description and points ``challenger`` at it. Returns the ModelVersion.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    if model_name is not None and (not model_name.strip() or set("/:") & set(model_name)):
        raise ConfigError(
            f"--name: {model_name!r} is not a registered model name (not empty, no '/' or ':')"
        )
    run_dir = check_run_folder(run_dir)
    mpath = find_metrics(run_dir, metrics_path)
    metrics = read_metrics(mpath)
    params = load_run_config(run_dir / "config.yaml")
    ref = attach_run(run_dir, tracking_uri=tracking_uri)
    client = MlflowClient(ref.tracking_uri)
    run = client.get_run(ref.run_id)
    if f"{EVAL_PREFIX}fid" not in run.data.metrics:
        log_evaluation(run_dir, metrics, tracking_uri=ref.tracking_uri)
    run_tags = dict(run.data.tags)
    dataset = run_tags.get(L.TAG_DATASET) or Path(params.data.path).name
    name = model_name or model_name_for(params, dataset)
    steps = final_step(run_dir) or None
    card = model_card(name, params, metrics, run_tags, run_id=ref.run_id, steps=steps)
    fingerprint = f"{sha256_file(run_dir / 'generator.safetensors')}:{sha256_file(mpath)}:{name}"
    tags = version_tags(metrics, run_tags, ref.run_id)

    with using_tracking_uri(ref.tracking_uri):
        model_uri = _logged_model(client, run_dir, ref.run_id, fingerprint)
        if model_uri is None:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == ref.run_id:
                run_ctx = contextlib.nullcontext()  # the caller has this very run open
            else:
                run_ctx = mlflow.start_run(run_id=ref.run_id, nested=active is not None)
            with run_ctx:
                info = log_generator_model(run_dir, card=card, name=MODEL_NAME_IN_RUN)
                mlflow.log_text(card, "model_card.md")
            model_uri = info.model_uri
            update_run_ref(
                run_dir,
                model={
                    "model_id": info.model_id,
                    "model_uri": model_uri,
                    "fingerprint": fingerprint,
                },
            )
        mv = mlflow.register_model(model_uri, name, tags=tags)
    client.update_model_version(name, mv.version, description=card)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return client.get_model_version(name, mv.version)
