"""Prefect tasks: a DVC stage, a ``ganops`` command, the params files, progress and summaries.

Each pipeline stage is ``dvc repro --single-item STAGE`` in the project directory: DVC runs the
stage's ``ganops`` command only if its code, params or inputs changed (that is the task cache;
Prefect's own cache is off for these tasks) and records what ran in dvc.lock, exactly as a
``dvc repro`` would. The command runs in a child process with the project's code first on
``PYTHONPATH`` (the code DVC hashes is the code that runs) and the venv's ``bin`` first on
``PATH``.

Failures: ``ganops`` exits with 2 on a user error (bad data, params, paths) and prints one
``error: ...`` line. Such a failure raises :class:`StageUserError` with that line and is not
retried; anything else (a crash, a killed process, a lock held by another DVC) raises
:class:`StageFailed` and is retried a few times.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE

from flows.paramfiles import apply_pipeline_params, read_dvc_yaml
from flows.params import PipelineParams
from gan_models.errors import GanopsError
from gan_models.gpu import cuda_env, gpu_slot

USER_ERROR_EXIT = GanopsError.exit_code
# Retries of a transient failure: DVC's lock held by another process, a crashed command.
STAGE_RETRIES = 2
STAGE_RETRY_DELAYS = [10, 60]
STATE_DIR = ".ganops"
PROGRESS_KEY = "training-progress"


class StageUserError(GanopsError):
    """A stage's command refused its input (exit code 2): retrying cannot help."""


class StageFailed(RuntimeError):
    """A stage's command failed for another reason (crash, signal, lock): worth a retry."""


@dataclass
class CommandResult:
    """What a finished command did: its exit code, combined output and wall time."""

    args: list[str]
    returncode: int
    output: str
    seconds: float


# ----------------------------------------------------------------------------- processes


def project_env(project: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a stage's process: the project's code and the venv's tools first."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(project), env.get("PYTHONPATH", "")) if p)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    with contextlib.suppress(Exception):  # outside a flow run there is nothing to pass on
        from prefect.runtime import flow_run

        if flow_run.id:
            # The lineage of an MLflow run started inside the stage can name this flow run.
            env["PREFECT__FLOW_RUN_ID"] = str(flow_run.id)
    env.update(extra or {})
    return env


def _stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Interrupt a command's process group (the trainer checkpoints on SIGINT), then kill it."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(
    args: Sequence[str],
    cwd: Path,
    env: dict[str, str],
    *,
    on_line: Callable[[str], None] | None = None,
    on_poll: Callable[[], None] | None = None,
    poll_s: float = 1.0,
) -> CommandResult:
    """Run ``args`` to completion, passing each output line to ``on_line`` as it comes.

    ``on_poll`` is called from the calling thread about every ``poll_s`` seconds while the
    command runs (progress reporting). If the caller is interrupted (a cancelled flow run),
    the command's whole process group is interrupted and then killed.
    """
    exe = shutil.which(args[0], path=env.get("PATH"))
    if exe is None:
        raise GanopsError(f"{args[0]}: not found on PATH; install the project (make setup)")
    began = time.perf_counter()
    lines: list[str] = []
    proc = subprocess.Popen(
        [exe, *args[1:]],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group, so a cancel reaches the trainer too
    )

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while True:
            try:
                proc.wait(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                if on_poll is not None:
                    on_poll()
    except BaseException:
        _stop(proc)
        raise
    finally:
        reader.join(timeout=10)
    if on_poll is not None:
        on_poll()
    return CommandResult(list(args), proc.returncode, "".join(lines), time.perf_counter() - began)


def error_line(output: str) -> str | None:
    """The ``error: ...`` line a ``ganops`` command printed last, if any."""
    found = [ln.strip() for ln in output.splitlines() if ln.startswith("error: ")]
    return found[-1] if found else None


def check(result: CommandResult, what: str) -> CommandResult:
    """Raise StageUserError (exit 2, not retried) or StageFailed (retried) for a failure."""
    if result.returncode == 0:
        return result
    # DVC exits 255 and reports the stage command's own exit code in its last line.
    dvc_exit = re.findall(r"failed to run: .*, exited with (-?\d+)", result.output)
    code = int(dvc_exit[-1]) if dvc_exit else result.returncode
    lines = result.output.strip().splitlines()
    if code == USER_ERROR_EXIT:  # ganops' user errors and click's usage errors
        shown = error_line(result.output) or next(
            (ln.strip() for ln in reversed(lines) if ln.lower().startswith("error")),
            lines[-1] if lines else "(no output)",
        )
        raise StageUserError(f"{what}: {shown}")
    dvc_errors = [ln for ln in lines if ln.startswith("ERROR: ")]
    if not dvc_exit and dvc_errors and "lock" not in dvc_errors[-1].lower():
        # DVC refused before running anything (missing input, unknown stage, bad dvc.yaml);
        # only its lock (another DVC process) is worth waiting for.
        raise StageUserError(f"{what}: {dvc_errors[-1]}")
    tail = "\n".join(lines[-15:])
    raise StageFailed(f"{what}: exited with {code}:\n{tail}")


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: retry transient failures, never a user error."""
    exc = getattr(state, "data", None)
    return not isinstance(exc, GanopsError)


# ----------------------------------------------------------------------------- progress


class ProgressArtifact:
    """A Prefect progress artifact, created on the first report and updated afterwards."""

    def __init__(self, key: str = PROGRESS_KEY) -> None:
        self.key = key
        self.id: Any = None
        self.last: float | None = None

    def report(self, step: int, total: int, where: str = "") -> None:
        progress = min(100.0, 100.0 * step / max(total, 1))
        if progress == self.last:
            return
        description = f"training {where}: step {step}/{total}".replace("  ", " ")
        if self.id is None:
            self.id = create_progress_artifact(progress, key=self.key, description=description)
        else:
            update_progress_artifact(self.id, progress, description=description)
        self.last = progress


class StatsFollower:
    """Follows RUN_DIR/stats.jsonl of a trainer running in another process.

    The trainer appends one JSON record per logged step and writes config.yaml when a session
    starts (fresh or resumed; a fresh start also replaces stats.jsonl, a resume truncates it).
    Records that were there before are an earlier run's and are skipped; a new config.yaml
    means a new session, so the file is read again from its start.
    """

    def __init__(self, run_dir: str | Path, report: Callable[[int, int], None]) -> None:
        self.run_dir = Path(run_dir)
        self.report = report
        self.config_mtime = self._config_mtime()
        self.offset = self._size()
        self.total: int | None = None
        self.step: int | None = None

    def _config_mtime(self) -> int | None:
        with contextlib.suppress(OSError):
            return (self.run_dir / "config.yaml").stat().st_mtime_ns
        return None

    def _size(self) -> int:
        with contextlib.suppress(OSError):
            return (self.run_dir / "stats.jsonl").stat().st_size
        return 0

    def poll(self) -> None:
        mtime = self._config_mtime()
        if mtime != self.config_mtime:  # a training session started: read its records
            self.config_mtime, self.offset, self.step = mtime, 0, None
            with contextlib.suppress(OSError, yaml.YAMLError, KeyError, TypeError):
                config = yaml.safe_load((self.run_dir / "config.yaml").read_text())
                self.total = int(config["train"]["steps"])
        if self.total is None or self._size() <= self.offset:
            if self._size() < self.offset:
                self.offset = 0  # replaced by a shorter file
            return
        with open(self.run_dir / "stats.jsonl", "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for the next poll
        self.offset += len(complete)
        steps = []
        for line in complete.decode(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                steps.append(int(json.loads(line)["step"]))
        if steps and max(steps) != self.step:
            self.step = max(steps)
            self.report(self.step, self.total)


class PrefectProgress:
    """Trainer callback (``train(..., callbacks=[PrefectProgress()])``) for in-process training.

    Updates a progress artifact of the current task or flow run at every logged step.
    """

    def __init__(self, key: str = PROGRESS_KEY) -> None:
        self.artifact = ProgressArtifact(key)

    def __call__(self, info: Any) -> None:  # info: gan_models.training.loop.StepInfo
        if info.losses or info.step == info.total_steps:
            self.artifact.report(info.step, info.total_steps, str(info.run_dir))


# ----------------------------------------------------------------------------- locking


@contextlib.contextmanager
def project_lock(project: Path, poll_s: float = 5.0) -> Iterator[None]:
    """One pipeline at a time per checkout: runs share its params files and outputs."""
    path = project / STATE_DIR / "pipeline.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    get_run_logger().info("another pipeline runs in %s; waiting for it", project)
                    waited = True
                time.sleep(poll_s)
        yield
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- tasks


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


def stage_option(project: Path, stage: str, option: str) -> str | None:
    """The value of ``option`` in a dvc.yaml stage's command (e.g. the train stage's --run-dir)."""
    spec = (read_dvc_yaml(project).get("stages") or {}).get(stage) or {}
    m = re.search(rf"{re.escape(option)}[ =](\S+)", str(spec.get("cmd", "")))
    return m.group(1) if m else None


# ----------------------------------------------------------------------------- summary


def read_registration(path: Path) -> dict[str, Any] | None:
    """What ``ganops register --record`` wrote: model, version, run_id (decision, reason)."""
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def decision_text(registration: dict[str, Any] | None) -> str | None:
    """One line on the promotion gate's decision, if it ran."""
    if not registration or not registration.get("decision"):
        return None
    champion = ""
    if "champion" in registration:
        c = registration["champion"]
        champion = f" (champion now: version {c})" if c else " (no champion)"
    return (
        f"{registration['model']} version {registration['version']}: "
        f"**{registration['decision']}**: {registration.get('reason', '')}{champion}"
    )


def _mlflow_links(run_dir: Path, registration: dict[str, Any] | None) -> list[str]:
    ref_path = run_dir / "mlflow_run.json"
    if not ref_path.is_file():
        return []
    ref = json.loads(ref_path.read_text())
    uri, run_id, exp = ref.get("tracking_uri", ""), ref.get("run_id"), ref.get("experiment_id")
    lines = []
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        lines.append(f"- MLflow run: [{run_id}]({base}/#/experiments/{exp}/runs/{run_id})")
        if registration:
            name, version = registration["model"], registration["version"]
            lines.append(
                f"- Model version: [{name} v{version}]({base}/#/models/{name}/versions/{version})"
            )
    else:
        lines.append(f"- MLflow run: `{run_id}` (experiment {exp}) in `{uri}`")
        if registration:
            lines.append(
                f"- Model version: `models:/{registration['model']}/{registration['version']}`"
            )
    return lines


def summary_markdown(
    run_dir: Path,
    stages: list[dict[str, Any]],
    *,
    title: str,
    registration: dict[str, Any] | None = None,
) -> str:
    """The run's summary: stages, metrics with their CIs, promotion decision, MLflow links."""
    out = [f"# {title}", "", "| stage | status | seconds |", "|---|---|---|"]
    out += [f"| {s['stage']} | {s['status']} | {s['seconds']:.1f} |" for s in stages]
    metrics_path = run_dir / "metrics.json"
    out += ["", "## Metrics", ""]
    if metrics_path.is_file():
        from gan_models.tracking.card import metrics_rows

        metrics = json.loads(metrics_path.read_text())
        out += ["| metric | value | notes |", "|---|---|---|"]
        out += [f"| {m} | {v} | {n} |" for m, v, n in metrics_rows(metrics)]
        ex = (metrics.get("lineage") or {}).get("extractor") or {}
        out += ["", f"From `{metrics_path}` (features: {ex.get('name', 'n/a')})."]
    else:
        out.append(f"No `{metrics_path}`: the run was not evaluated.")
    decision = decision_text(registration)
    if decision:
        out += ["", "## Promotion", "", decision]
    links = _mlflow_links(run_dir, registration)
    if links:
        out += ["", "## MLflow", "", *links]
    return "\n".join(out) + "\n"


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


def publish_trials(summary_path: Path, key: str = "tune-trials") -> list[dict[str, Any]]:
    """A table artifact of a study's trials (from its runs/tune/STUDY/summary.json)."""
    if not summary_path.is_file():
        return []
    summary = json.loads(summary_path.read_text())
    best = (summary.get("best") or {}).get("number")
    rows = []
    for t in summary.get("trials") or []:
        rows.append(
            {
                "trial": t["number"],
                "state": t["state"] + (" (best)" if t["number"] == best else ""),
                "fid": None if t.get("fid") is None else round(t["fid"], 2),
                "steps": t.get("steps_trained"),
                "pruned at": t.get("pruned_at"),
                "retry of": t.get("retry_of"),
                "params": json.dumps(t.get("params") or {}),
            }
        )
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(summary.get("counts", {}).items()))
    create_table_artifact(rows, key=key, description=f"study {summary['study']}: {counts}")
    return rows
