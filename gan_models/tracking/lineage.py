"""Lineage: what ties a run to its code, data, params and orchestration.

Every tracked run carries these as tags (``ganops.*``), and every registered model version copies
them, so a champion can be traced back to the commit, the data version and the params that made
it. Optuna study/trial tags (``optuna.study``, ``optuna.trial``) are passed in by the tuner.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gan_models.errors import DataError
from gan_models.training.params import TrainParams
from gan_models.utils.io import sha256_file
from gan_models.utils.paths import project_root

# Tag names, in one place: runs, model versions and the model card all use them.
TAG_GIT_COMMIT = "ganops.git_commit"
TAG_GIT_DIRTY = "ganops.git_dirty"
TAG_DATASET = "ganops.dataset"
TAG_DATA_PATH = "ganops.data_path"
TAG_DATA_VERSION = "ganops.data_version"
TAG_DATA_VERSION_SOURCE = "ganops.data_version_source"
TAG_PARAMS_HASH = "ganops.params_hash"
TAG_FAMILY = "ganops.family"
TAG_RUN_DIR = "ganops.run_dir"
TAG_HOST = "ganops.host"  # the machine that trained: which worker of a team pool ran it
TAG_FLOW_RUN = "ganops.prefect_flow_run_id"
TAG_OPTUNA_STUDY = "optuna.study"
TAG_OPTUNA_TRIAL = "optuna.trial"
TAG_OPTUNA_STORAGE = "optuna.storage"
TAG_TUNED_FROM_RUN = "ganops.tuned_from_run"  # the MLflow run of the trial the params came from
DATA_UNAVAILABLE = "unavailable (data path missing)"
LINEAGE_TAGS = (
    TAG_FAMILY,
    TAG_DATASET,
    TAG_DATA_PATH,
    TAG_DATA_VERSION,
    TAG_DATA_VERSION_SOURCE,
    TAG_PARAMS_HASH,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_FLOW_RUN,
    TAG_HOST,
    TAG_OPTUNA_STUDY,
    TAG_OPTUNA_TRIAL,
    TAG_OPTUNA_STORAGE,
    TAG_TUNED_FROM_RUN,
)


def git_state(root: str | Path) -> tuple[str, str]:
    """(commit, dirty) of the git checkout at ``root``; ``("unknown", "unknown")`` outside one.

    Dirty means tracked files differ from the commit or untracked, non-ignored files exist:
    either could change what a run computes.
    """

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
        if out.returncode:
            raise OSError(out.stderr.strip())
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit, "true" if dirty else "false"


@dataclass(frozen=True)
class DataLineage:
    """Which dataset a run read and which version of it."""

    name: str  # the dataset directory's name, e.g. mnist5k
    root: Path  # the dataset directory (raw) or the processed dataset (holding manifest.json)
    record: Path  # manifest.json (processed) or meta.json (raw)
    version: str
    source: str  # where ``version`` comes from: dvc.lock, a .dvc file, or the record's sha256


def dataset_root(data_path: str | Path, split: str | None = None) -> tuple[Path, Path]:
    """(dataset directory, its manifest.json or meta.json) for a trainer's data path and split.

    A processed dataset is named either by its root (``data/processed/NAME`` with ``split``) or
    by one split folder (``data/processed/NAME/train``); both resolve to ``data/processed/NAME``.
    """
    path = Path(data_path)
    read = path / split if split else path
    if not read.is_dir():
        raise DataError(
            f"data.path: {read} does not exist; fetch it with `ganops data fetch` "
            "(or preprocess it with `ganops data preprocess`)"
        )
    for root in (path, path.parent):
        if (root / "manifest.json").is_file():
            return root, root / "manifest.json"
    if (read / "meta.json").is_file():
        return path, read / "meta.json"
    raise DataError(
        f"data.path: {read} holds neither meta.json nor a processed manifest.json next to it; "
        "expected a dataset written by `ganops data fetch` or `ganops data preprocess`"
    )


def _dvc_outs(doc: Any) -> list[tuple[str, dict[str, Any]]]:
    """(path, entry) of every output recorded in a dvc.lock or .dvc document."""
    outs = []
    if not isinstance(doc, dict):
        return outs
    for stage in (doc.get("stages") or {}).values():
        outs += [(o["path"], o) for o in (stage or {}).get("outs") or [] if "path" in o]
    outs += [(o["path"], o) for o in doc.get("outs") or [] if isinstance(o, dict) and "path" in o]
    return outs


def _dvc_hash(entry: dict[str, Any]) -> str | None:
    algo = entry.get("hash", "md5")
    value = entry.get(algo) or entry.get("md5") or entry.get("etag")
    return str(value) if value else None


def dvc_version(root: Path, project: Path) -> tuple[str, str] | None:
    """(hash, source) of ``root`` as DVC recorded it, from dvc.lock or ``root``.dvc; else None.

    An output that contains ``root`` (e.g. ``data/processed`` for ``data/processed/NAME``) is
    used when no output names ``root`` itself: its hash versions everything under it.
    """
    target = root.resolve()
    candidates: list[tuple[int, str, str]] = []
    for file, base in ((project / "dvc.lock", project), (Path(f"{root}.dvc"), root.parent)):
        if not file.is_file():
            continue
        try:
            doc = yaml.safe_load(file.read_text())
        except yaml.YAMLError:
            continue
        for out_path, entry in _dvc_outs(doc):
            out = (base / out_path).resolve()
            value = _dvc_hash(entry)
            if value is None:
                continue
            if out == target:
                candidates.append((0, value, file.name))
            elif out in target.parents:
                candidates.append((len(target.relative_to(out).parts), value, file.name))
    if not candidates:
        return None
    _, value, source = min(candidates)
    return value, source


def data_lineage(
    data_path: str | Path, split: str | None = None, project: Path | None = None
) -> DataLineage:
    """The dataset a trainer reads and its version (DVC's hash when tracked, else sha256)."""
    root, record = dataset_root(data_path, split)
    found = dvc_version(root, project or project_root())
    if found:
        version, source = found
    else:
        version, source = sha256_file(record), f"sha256 of {record.name}"
    return DataLineage(root.name, root, record, version, source)


def prefect_flow_run_id() -> str | None:
    """The Prefect flow run this process is inside, else None.

    Prefect is imported only when something already imported it: a flow run always has, and
    importing it otherwise costs seconds.
    """
    if "prefect" not in sys.modules:
        # A stage that a flow runs as a child process (flows/tasks.py) gets the id in its env.
        return os.environ.get("PREFECT__FLOW_RUN_ID") or None
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.id
    except Exception:  # noqa: BLE001 - a broken Prefect context must not stop training
        return None
    return str(run_id) if run_id else None


def run_tags(
    params: TrainParams,
    run_dir: str | Path,
    *,
    project: Path | None = None,
    extra: dict[str, Any] | None = None,
    require_data: bool = True,
) -> dict[str, str]:
    """The lineage tags of a training run (``extra`` on top, e.g. the Optuna study and trial).

    With ``require_data=False`` a missing dataset is recorded as unavailable instead of raising.
    """
    project = project or project_root()
    commit, dirty = git_state(project)
    try:
        data = data_lineage(params.data.path, params.data.split, project)
        name, version, source = data.name, data.version, data.source
    except DataError:
        if require_data:
            raise
        name, version, source = Path(params.data.path).name, "unknown", DATA_UNAVAILABLE
    tags = {
        TAG_FAMILY: params.model.family,
        TAG_DATASET: name,
        TAG_DATA_PATH: str(params.data.path),
        TAG_DATA_VERSION: version,
        TAG_DATA_VERSION_SOURCE: source,
        TAG_PARAMS_HASH: params.digest(),
        TAG_GIT_COMMIT: commit,
        TAG_GIT_DIRTY: dirty,
        TAG_RUN_DIR: str(Path(run_dir).resolve()),
        TAG_HOST: socket.gethostname(),
    }
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit  # shown by the MLflow UI
    flow_run = prefect_flow_run_id()
    if flow_run:
        tags[TAG_FLOW_RUN] = flow_run
    if params.tuned is not None:  # trained from params/best.yaml: name the trial behind them
        tags[TAG_OPTUNA_STUDY] = params.tuned.study
        tags[TAG_OPTUNA_TRIAL] = str(params.tuned.trial)
        tags[TAG_OPTUNA_STORAGE] = params.tuned.storage
        if params.tuned.mlflow_run_id:
            tags[TAG_TUNED_FROM_RUN] = params.tuned.mlflow_run_id
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags
