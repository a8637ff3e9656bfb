"""Score a trained run folder: ``ganops evaluate RUN_DIR`` and a summary artifact.

The pipeline evaluates through DVC (the ``evaluate`` stage); this flow scores any run folder,
e.g. a tuning trial's, with the same command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.params import EvaluateFlowParams
from flows.tasks import publish_summary, run_ganops


@flow(name="evaluate", log_prints=True)
def evaluate(params: EvaluateFlowParams = EvaluateFlowParams()) -> dict[str, Any]:
    """Evaluate ``run_dir``: metrics.json with CIs, figures, and a markdown summary."""
    project = str(Path(params.project_dir).resolve())
    args = ["evaluate", params.run_dir]
    for item in params.overrides:
        args += ["--set", item]
    out = run_ganops(project, args, "evaluate")
    stages = [{"stage": "evaluate", "status": "ran", "seconds": out["seconds"]}]
    publish_summary(
        project, params.run_dir, stages, f"Evaluation: {params.run_dir}", key="evaluation"
    )
    return {"run_dir": params.run_dir, "metrics": str(Path(params.run_dir) / "metrics.json")}
