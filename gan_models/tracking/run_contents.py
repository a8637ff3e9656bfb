"""What a training run's MLflow run holds besides its metrics: params, data record, run files.

Both a tracked training run and a run created later for an untracked folder log these the same
way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gan_models.tracking.lineage import dataset_root
from gan_models.tracking.values import MAX_TAG, param_value
from gan_models.utils.dicts import flatten

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from gan_models.training.params import TrainParams

# The run folder's files kept with the run (artifact path ``run/``), when they exist.
RUN_FILES = ("config.yaml", "spec.json", "run.json", "stats.jsonl")


def log_params(client: MlflowClient, run_id: str, params: TrainParams) -> None:
    """Log the flattened config; on resume, keys whose value changed become tags.

    MLflow params are write-once, and a resume may legitimately grow ``train.steps``.
    """
    from mlflow.entities import Param

    have = client.get_run(run_id).data.params
    flat = {k: param_value(v) for k, v in flatten(params.to_dict()).items()}
    new = [Param(k, v) for k, v in flat.items() if k not in have]
    for i in range(0, len(new), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=new[i : i + 100])
    for k, v in flat.items():
        if k in have and have[k] != v:
            client.set_tag(run_id, f"param_update.{k}", v[:MAX_TAG])


def data_record(params: TrainParams) -> Path:
    """The training data's record (its manifest.json or meta.json), logged under ``data/``."""
    return dataset_root(params.data.path, params.data.split)[1]


def run_files(run_dir: Path) -> list[Path]:
    """The run folder's :data:`RUN_FILES` that exist, logged under ``run/``."""
    return [run_dir / f for f in RUN_FILES if (run_dir / f).is_file()]


def log_data_record(client: MlflowClient, run_id: str, params: TrainParams) -> None:
    """Log the training data's record under ``data/``."""
    client.log_artifact(run_id, str(data_record(params)), "data")


def log_run_files(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    """Log the run folder's :data:`RUN_FILES` that exist under ``run/``."""
    for path in run_files(run_dir):
        client.log_artifact(run_id, str(path), "run")
