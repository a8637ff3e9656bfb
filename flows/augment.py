"""Does synthetic data help a classifier? ``ganops augment`` as a flow, with its table and
conclusion as a markdown artifact.

The experiment's one implementation is :mod:`gan_models.augment`; the flow runs the command a
user would (as the DVC stage in pipelines/augment does), on a GPU of the pool when the host has
one (the generators train there), and publishes what it found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.params import AugmentFlowParams
from flows.tasks import run_ganops


@flow(name="augment", log_prints=True)
def augment(params: AugmentFlowParams = AugmentFlowParams()) -> dict[str, Any]:
    """Real vs classical vs GAN augmentation at k images per class: accuracy with intervals."""
    from gan_models.augment.config import load_augment_params
    from gan_models.augment.experiment import paths_for

    project = Path(params.project_dir).resolve()
    settings = load_augment_params(project / params.params, params.overrides)  # fail fast
    args = ["augment", params.params]
    for item in params.overrides:
        args += ["--set", item]
    for arm in params.arms:
        args += ["--arm", arm]
    out = run_ganops(str(project), args, "augment", gpu=True)
    report = project / paths_for(settings).out
    markdown = "\n\n".join(
        [
            f"# Augmentation experiment: {Path(settings.data).name}",
            (report / "table.md").read_text(),
            (report / "conclusion.md").read_text(),
        ]
    )
    create_markdown_artifact(markdown, key="augment-report", description="augmentation experiment")
    return {"report": str(report), "seconds": out["seconds"]}
