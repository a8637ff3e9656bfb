"""The scheduled retrain (prefect.yaml: weekly): the pipeline on the current params and data.

The fetch stage is forced, so a source that changed since the last run is picked up; DVC then
re-runs the later stages only if the fetched data (or params, or code) differ, and the
promotion gate decides whether the retrained generator replaces the champion.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.params import RetrainParams
from flows.pipeline import pipeline


@flow(name="retrain", log_prints=True)
def retrain(params: RetrainParams = RetrainParams()) -> dict[str, Any]:
    """Re-run the pipeline on the current data version (params files as they are)."""
    return pipeline(refresh_data=True, project_dir=params.project_dir)
