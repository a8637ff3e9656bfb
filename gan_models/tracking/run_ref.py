"""RUN_DIR/mlflow_run.json: which MLflow run a run folder is tracked in.

``tracked_train`` writes it so that the later stages (evaluation, registration) attach to the
same run; they may add their own keys to it (e.g. ``model``), which are kept until the folder is
tracked in another run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gan_models.errors import GanopsError
from gan_models.utils.io import write_json_atomic

RUN_REF_FILE = "mlflow_run.json"


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
