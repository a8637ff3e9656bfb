"""A command in the project as a child process, and what its failure means.

The command runs with the project's code first on ``PYTHONPATH`` (the code DVC hashes is the code
that runs) and the venv's ``bin`` first on ``PATH``, in its own process group, its output passed
on line by line as it comes.

Failures: ``ganops`` exits with 2 on a user error (bad data, params, paths) and prints one
``error: ...`` line. Such a failure raises :class:`StageUserError` with that line and is not
retried; anything else (a crash, a killed process, a lock held by another DVC) raises
:class:`StageFailed` and is worth retrying.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gan_models.errors import GanopsError

USER_ERROR_EXIT = GanopsError.exit_code


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
