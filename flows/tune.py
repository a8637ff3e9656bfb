"""The ``tune`` flow: a hyperparameter search (``ganops tune``) and a table of its trials.

Trials run where params/tune.yaml (or the flow's parameters) say: in the command's own process,
as local worker processes, or, with a work pool, as flow runs of the ``train-trial`` deployment
(one GPU each). The best trial's params land in ``out`` (params/best.yaml). The pipeline flow
runs the same search as its DVC ``tune`` stage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow

from flows.params import TuneFlowParams
from flows.summary import publish_trials
from flows.tasks import run_ganops


def study_summary(project: Path, best_file: str) -> Path | None:
    """runs/tune/STUDY/summary.json of the study a best-params file came from."""
    import yaml

    path = project / best_file
    if not path.is_file():
        return None
    tuned = (yaml.safe_load(path.read_text()) or {}).get("tuned")
    if not tuned:
        return None
    from gan_models.tuning.inputs import SUMMARY_FILE, TUNE_ROOT

    return project / TUNE_ROOT / tuned["study"] / SUMMARY_FILE


def runs_here(project: Path, params: TuneFlowParams) -> bool:
    """Whether the trials train in the command's own process (which then needs a GPU)."""
    from gan_models.tuning.inputs import load_tuning

    tuning = load_tuning(
        project / params.params,
        project / params.tune_params,
        params.overrides,
        workers=params.workers,
        pool=params.pool,
        root=project,
    )
    return tuning.tune.pool is None and tuning.tune.workers == 1


@flow(name="tune", log_prints=True)
def tune(params: TuneFlowParams = TuneFlowParams()) -> dict[str, Any]:
    """Run (or continue) the study; export the best params; publish the trials."""
    project = Path(params.project_dir).resolve()
    out = run_ganops(str(project), params.args(), "tune", gpu=runs_here(project, params))
    summary = study_summary(project, params.out)
    rows = publish_trials(summary) if summary else []
    return {"out": params.out, "seconds": out["seconds"], "trials": len(rows)}


if __name__ == "__main__":
    tune(TuneFlowParams(**json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}")))
