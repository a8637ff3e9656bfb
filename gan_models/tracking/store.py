"""Where runs go: the tracking URI, its server's reachability, experiments and their artifacts.

The tracking URI, in order:

1. the ``tracking_uri`` argument;
2. for a run folder that is already tracked, the URI stored in its mlflow_run.json;
3. the ``MLFLOW_TRACKING_URI`` environment variable;
4. ``sqlite:///<project root>/mlflow.db`` with artifacts under ``<project root>/mlartifacts``.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gan_models.errors import GanopsError
from gan_models.tracking.run_ref import read_run_ref
from gan_models.utils.paths import project_root

DEFAULT_EXPERIMENT = "ganops"
_URI_ENV = "MLFLOW_TRACKING_URI"


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
