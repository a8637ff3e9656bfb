"""Where the checkout is: the one rule every default path under the project root follows.

The services (``.ganops/``, the MLflow server's ``mlflow.db``), the embedded MLflow store and its
artifacts, the tuning studies and the data lineage (``dvc.lock``) all sit in the project root,
so they must all find the same one.
"""

from __future__ import annotations

from pathlib import Path

# A directory holding either is a project root: dvc.yaml (the pipeline) or pyproject.toml.
ROOT_MARKERS = ("dvc.yaml", "pyproject.toml")


def project_root(start: str | Path | None = None) -> Path:
    """The checkout: the nearest directory upward from ``start`` (the cwd) holding dvc.yaml or
    pyproject.toml; ``start`` itself when there is none."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if any((d / marker).is_file() for marker in ROOT_MARKERS):
            return d
    return here
