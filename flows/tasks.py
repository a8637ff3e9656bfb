"""Prefect tasks: a DVC stage, a ``ganops`` command, the params files and the run's summary.

Each pipeline stage is ``dvc repro --single-item STAGE`` in the project directory: DVC runs the
stage's ``ganops`` command only if its code, params or inputs changed (that is the task cache;
Prefect's own cache is off for these tasks) and records what ran in dvc.lock, exactly as a
``dvc repro`` would. Commands run as child processes (:mod:`flows.runner`), their output logged
to the task run and a trainer's progress followed (:mod:`flows.progress`).

A user error (``ganops`` exits with 2) fails a task at once and is not retried; anything else
(a crash, a killed process, a lock held by another DVC) is retried a few times.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.paramfiles import apply_pipeline_params
from flows.params import PipelineParams
from flows.progress import ProgressArtifact, StatsFollower
from flows.runner import CommandResult, check, project_env, run_command
from flows.summary import summary_markdown
from gan_models.errors import GanopsError
from gan_models.gpu import cuda_env, gpu_slot

# Retries of a transient failure: DVC's lock held by another process, a crashed command.
STAGE_RETRIES = 2
STAGE_RETRY_DELAYS = [10, 60]


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: retry transient failures, never a user error."""
    exc = getattr(state, "data", None)
    return not isinstance(exc, GanopsError)


def _status(output: str, stage: str) -> str:
    if f"Running stage '{stage}'" in output:
        return "ran"
    if "is cached - skipping run" in output:
        return "restored"  # DVC's run cache had these outputs
    return "skipped"


def _run(
    project: Path,
    args: list[str],
    what: str,
    *,
    follow: str | None = None,
    gpu: bool = False,
) -> tuple[CommandResult, int | None]:
    """A command in the project, its output logged to the task run, progress followed.

    Returns the result and the GPU index it held (None: none held).
    """
    logger = get_run_logger()
    slot = gpu_slot(on_wait=lambda g: logger.info("all GPUs %s are busy; waiting", g))
    with slot if gpu else contextlib.nullcontext() as index:
        if index is not None:
            logger.info("%s runs on GPU %d", what, index)
        env = project_env(project, cuda_env(index))
        follower = None
        if follow is not None:
            artifact = ProgressArtifact()
            follower = StatsFollower(project / follow, lambda s, t: artifact.report(s, t, follow))
        result = run_command(
            args,
            project,
            env,
            on_line=lambda line: logger.info("%s", line) if line.strip() else None,
            on_poll=follower.poll if follower else None,
        )
    return check(result, what), index


@task(
    name="stage",
    task_run_name="{stage}",
    retries=STAGE_RETRIES,
    retry_delay_seconds=STAGE_RETRY_DELAYS,
    retry_condition_fn=retry_unless_user_error,
    cache_policy=NO_CACHE,  # DVC decides what is up to date
)
def run_stage(
    project: str, stage: str, force: bool = False, follow: str | None = None, gpu: bool = False
) -> dict[str, Any]:
    """``dvc repro --single-item STAGE``: runs the stage if anything it depends on changed.

    ``follow`` is a run folder whose stats.jsonl becomes a progress artifact; ``gpu`` holds a
    GPU for the stage. Returns {stage, status (ran, skipped, restored), seconds}.
    """
    args = ["dvc", "repro", "--single-item", *(["--force"] if force else []), stage]
    result, index = _run(Path(project), args, f"stage {stage!r}", follow=follow, gpu=gpu)
    status = _status(result.output, stage)
    return {"stage": stage, "status": status, "seconds": result.seconds, "gpu": index}


@task(
    name="ganops",
    task_run_name="ganops-{name}",
    retries=STAGE_RETRIES,
    retry_delay_seconds=STAGE_RETRY_DELAYS,
    retry_condition_fn=retry_unless_user_error,
    cache_policy=NO_CACHE,
)
def run_ganops(
    project: str,
    args: list[str],
    name: str,
    follow: str | None = None,
    gpu: bool = False,
) -> dict[str, Any]:
    """``ganops ARGS`` in the project; returns {command, output, seconds, gpu}."""
    result, index = _run(Path(project), ["ganops", *args], f"ganops {name}", follow=follow, gpu=gpu)
    command = "ganops " + " ".join(args)
    return {"command": command, "output": result.output, "seconds": result.seconds, "gpu": index}


@task(name="configure", cache_policy=NO_CACHE)
def configure(project: str, params: PipelineParams) -> dict[str, list[str]]:
    """Write the run's parameters into the params files (validated first; atomic)."""
    changed = apply_pipeline_params(project, params)
    logger = get_run_logger()
    for file, keys in changed.items():
        logger.info("%s: set %s", file, ", ".join(keys))
    if not changed:
        logger.info("the params files already hold these parameters")
    return changed


@task(name="summary", cache_policy=NO_CACHE)
def publish_summary(
    project: str,
    run_dir: str,
    stages: list[dict[str, Any]],
    title: str,
    registration: dict[str, Any] | None = None,
    key: str = "pipeline-summary",
) -> str:
    """Markdown and table artifacts of a run; returns the markdown."""
    markdown = summary_markdown(
        Path(project) / run_dir, stages, title=title, registration=registration
    )
    create_markdown_artifact(markdown, key=key, description=title)
    if stages:
        create_table_artifact(
            [{k: s[k] for k in ("stage", "status", "seconds")} for s in stages],
            key=f"{key}-stages",
            description="stages: ran, skipped (up to date) or restored (DVC run cache)",
        )
    return markdown
