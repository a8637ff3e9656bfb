"""The pipeline flow: params -> fetch, validate, preprocess, features, tune, train, evaluate,
register (registration and promotion gate). The tune stage searches only when params/tune.yaml
says ``enabled: true`` (the flow's ``tune`` parameter sets it); otherwise it passes the training
params through to params/best.yaml unchanged.

The flow writes its parameters into the params files (as ``dvc exp run -S`` would) and runs
every stage of dvc.yaml, in order, through DVC: a ``dvc repro`` afterwards has nothing to do,
and the model registered and gated is the one ``dvc repro`` would register. Without a Prefect
server, Prefect starts one temporary server for the whole run (stages are child processes that
do not import Prefect)::

    python -m flows.pipeline '{"source": "digits", "preset": "dcgan-mnist5k-small", "steps": 200}'

The flow's parameters are top level and typed, so Prefect's "Custom run" form shows the family,
source and preset as selects and the training knobs as bounded number inputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow

from flows.locks import project_lock
from flows.paramfiles import stage_names, stage_option
from flows.params import (
    BatchSize,
    DatasetName,
    FamilyName,
    LearningRate,
    PipelineParams,
    PresetName,
    Seed,
    SourceName,
    Steps,
    TuneFlowParams,
    form_choice,
)
from flows.summary import publish_trials, read_registration
from flows.tasks import configure, publish_summary, run_stage
from flows.tune import runs_here, study_summary

TRAIN_STAGE = "train"
TUNE_STAGE = "tune"
BEST_FILE = "params/best.yaml"  # the tune stage's out, which the train stage trains from
FETCH_STAGE = "fetch"
REGISTER_STAGE = "register"


def tune_runs_here(project: Path) -> bool:
    """Whether the tune stage trains in its own process (no pool, one worker): it needs a GPU.

    With tuning off it trains nothing, and its search space is not checked against the family
    (params/tune.yaml searches the latent size, which CycleGAN and SRGAN do not have)."""
    from gan_models.tuning.inputs import load_tune

    params = TuneFlowParams(project_dir=str(project))
    if not load_tune(project / params.tune_params, []).enabled:
        return False
    return runs_here(project, params)


@flow(name="pipeline", log_prints=True)
def pipeline(
    family: form_choice(FamilyName) = None,
    preset: form_choice(PresetName) = None,
    source: form_choice(SourceName) = None,
    dataset: DatasetName | None = None,
    steps: Steps | None = None,
    batch_size: BatchSize | None = None,
    lr: LearningRate | None = None,
    seed: Seed | None = None,
    tune: form_choice(bool) = None,
    overrides: list[str] = [],  # noqa: B006 (never mutated; a run form needs a plain default)
    refresh_data: bool = False,
    project_dir: str = ".",
) -> dict[str, Any]:
    """Train, evaluate, register and gate a GAN through the DVC pipeline.

    Every parameter left empty (None) keeps what the params files say. In Prefect's run form
    the family, preset, source and tune switch are selects (blank = keep); the other fields
    switch from None to a value (the numbers with their bounds).

    Args:
        family: GAN family (model.family), see `ganops families`.
        preset: preset params/NAME.yaml whose data/model/loss/train sections become the
            training stage's; its family must agree with `family`.
        source: data source (fetch.source), see `ganops data sources`.
        dataset: dataset name (fetch.name): data/raw/NAME, data/processed/NAME; empty = the
            source's name when a source is given.
        steps: training steps (train.steps).
        batch_size: training batch size (train.batch_size).
        lr: generator learning rate (train.lr).
        seed: training seed (train.seed).
        tune: run the hyperparameter search (stage `tune`) first; sets tune.enabled.
        overrides: [params/FILE.yaml:]section.key=value items, applied last (as
            `dvc exp run -S`); an unknown section or key fails the run before anything is
            written.
        refresh_data: re-run the fetch stage even if DVC thinks it is up to date; later
            stages re-run only if the data changed.
        project_dir: the ganops checkout holding dvc.yaml (the worker's working directory).
    """
    params = PipelineParams(
        family=family, preset=preset, source=source, dataset=dataset, steps=steps,
        batch_size=batch_size, lr=lr, seed=seed, tune=tune, overrides=list(overrides),
        refresh_data=refresh_data, project_dir=project_dir,
    )  # fmt: skip
    project = Path(params.project_dir).resolve()
    run_dir = stage_option(project, TRAIN_STAGE, "--run-dir") or "runs/train"
    record = stage_option(project, REGISTER_STAGE, "--record")
    with project_lock(project):
        changed = configure(str(project), params)
        stages = []
        for stage in stage_names(project):
            gpu = stage == TRAIN_STAGE or (stage == TUNE_STAGE and tune_runs_here(project))
            stages.append(
                run_stage(
                    str(project),
                    stage,
                    force=params.refresh_data and stage == FETCH_STAGE,
                    follow=run_dir if stage == TRAIN_STAGE else None,
                    gpu=gpu,
                )
            )
            if stage == TUNE_STAGE and stages[-1]["status"] == "ran":
                summary = study_summary(project, BEST_FILE)
                if summary is not None:
                    publish_trials(summary)
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
    pipeline(**json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}"))
