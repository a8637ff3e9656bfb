"""One training job on one GPU: the ``train-trial`` deployment (tuning trials, one-off runs).

A job runs ``ganops train PARAMS --run-dir RUN_DIR --auto-resume --set ...`` (an unfinished run
with the same params in RUN_DIR is resumed, so a retried or re-submitted job continues); a
tuning trial (``trial_of``, submitted by ``ganops tune`` with a work pool) runs ``ganops tune
... --trial N``, which trains that trial and tells the study how it ended. Either runs in a child
process that sees only the GPU this flow run holds (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.params import TrainTrialParams
from flows.tasks import run_ganops


@flow(name="train", log_prints=True)
def train(params: TrainTrialParams) -> dict[str, Any]:
    """Train one GAN as a params file (plus overrides) describes, or one trial of a study."""
    project = Path(params.project_dir).resolve()
    if params.trial_of is not None:
        t = params.trial_of
        out = run_ganops(str(project), t.args(params.params), f"trial-{t.trial}", gpu=True)
        return {"study": t.study, "trial": t.trial, "seconds": out["seconds"], "gpu": out["gpu"]}
    args = ["train", params.params, "--run-dir", params.run_dir, "--auto-resume"]
    args += ["--set", "train.progress=false"]  # the progress artifact replaces the bar
    for item in params.overrides:
        args += ["--set", item]
    out = run_ganops(str(project), args, "train", follow=params.run_dir, gpu=True)
    return {"run_dir": params.run_dir, "seconds": out["seconds"], "gpu": out["gpu"]}
