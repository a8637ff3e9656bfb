"""The pipeline flow: params -> fetch, validate, preprocess, features, [tune], train, evaluate,
register (registration and promotion gate).

The flow writes its parameters into the params files (as ``dvc exp run -S`` would) and runs
every stage of dvc.yaml, in order, through DVC: a ``dvc repro`` afterwards has nothing to do,
and the model registered and gated is the one ``dvc repro`` would register. Without a Prefect
server, Prefect starts one temporary server for the whole run (stages are child processes that
do not import Prefect)::

    python -m flows.pipeline '{"dataset": "digits", "source": "digits"}'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow

from flows.paramfiles import stage_names
from flows.params import PipelineParams
from flows.tasks import (
    configure,
    project_lock,
    publish_summary,
    read_registration,
    run_stage,
    stage_option,
)
from gan_models.errors import ConfigError

TRAIN_STAGE = "train"
FETCH_STAGE = "fetch"
REGISTER_STAGE = "register"


def tune_hook() -> Any | None:
    """The tuning step, if the tuning work provides one: ``flows.tune.pipeline_hook(project)``.

    It is to leave its best params in the training params file; until flows/tune.py exists,
    ``tune=True`` is refused before anything runs.
    """
    try:
        from flows import tune  # type: ignore[attr-defined]
    except ImportError:
        return None
    return getattr(tune, "pipeline_hook", None)


@flow(name="pipeline", log_prints=True)
def pipeline(params: PipelineParams = PipelineParams()) -> dict[str, Any]:
    """Train, evaluate, register and gate a GAN through the DVC pipeline."""
    project = Path(params.project_dir).resolve()
    hook = tune_hook()
    if params.tune and hook is None:
        raise ConfigError("tune: no tuning flow is installed (flows/tune.py); set tune to false")
    run_dir = stage_option(project, TRAIN_STAGE, "--run-dir") or "runs/train"
    record = stage_option(project, REGISTER_STAGE, "--record")
    with project_lock(project):
        changed = configure(str(project), params)
        stages = []
        for stage in stage_names(project):
            if stage == TRAIN_STAGE and params.tune:
                hook(str(project))
            stages.append(
                run_stage(
                    str(project),
                    stage,
                    force=params.refresh_data and stage == FETCH_STAGE,
                    follow=run_dir if stage == TRAIN_STAGE else None,
                    gpu=stage == TRAIN_STAGE,
                )
            )
        registration = read_registration(project / record) if record else None
        title = "Pipeline: " + (
            f"{registration['model']} v{registration['version']}" if registration else project.name
        )
        publish_summary(str(project), run_dir, stages, title, registration)
    return {
        "project": str(project),
        "changed": changed,
        "stages": stages,
        "run_dir": run_dir,
        "registration": registration,
    }


if __name__ == "__main__":
    pipeline(PipelineParams(**json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}")))
