"""``log_evaluation``: a final evaluation of a run folder into the folder's MLflow run.

Its scalars become ``eval/<name>`` metrics at the run's final step (apart from the per-step
``fid`` curve that training logs), its lineage ``eval.lineage.*`` tags, the whole result and the
evaluation figures artifacts under ``evaluation/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from gan_models.tracking.attach import attach_run
from gan_models.tracking.run_ref import RunRef
from gan_models.tracking.values import MAX_TAG, is_number, param_value
from gan_models.utils.dicts import flatten

EVAL_PREFIX = "eval/"  # final evaluation metrics, apart from the per-step ``fid`` curve
# The figures write_evaluation leaves in the folder it writes metrics.json to.
EVAL_FIGURES = ("samples.png", "interpolation.png", "nearest_neighbours.png")


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
    return {k: float(v) for k, v in flat.items() if is_number(v)}


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
        client.set_tag(ref.run_id, k, param_value(v)[:MAX_TAG])
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
