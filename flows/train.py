"""One training job on one GPU: the ``train-trial`` deployment (tuning trials, one-off runs).

``ganops train PARAMS --run-dir RUN_DIR --auto-resume --set ...`` runs in a child process that
sees only the GPU this flow run holds (``CUDA_VISIBLE_DEVICES``, set before torch starts in
that process); the flow follows RUN_DIR/stats.jsonl into a progress artifact. An unfinished run
with the same params in RUN_DIR is resumed, so a retried or re-submitted trial continues.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.params import TrainTrialParams
from flows.tasks import run_ganops


@flow(name="train", log_prints=True)
def train(params: TrainTrialParams) -> dict[str, Any]:
    """Train one GAN as a params file (plus overrides) describes, into ``run_dir``."""
    project = Path(params.project_dir).resolve()
    args = ["train", params.params, "--run-dir", params.run_dir, "--auto-resume"]
    args += ["--set", "train.progress=false"]  # the progress artifact replaces the bar
    for item in params.overrides:
        args += ["--set", item]
    out = run_ganops(str(project), args, "train", follow=params.run_dir, gpu=True)
    return {"run_dir": params.run_dir, "seconds": out["seconds"], "gpu": out["gpu"]}
