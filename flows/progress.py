"""Training progress as a Prefect progress artifact.

A trainer in another process (a stage's command) is followed through its run folder's
stats.jsonl (:class:`StatsFollower`); a trainer in this process reports through a callback
(:class:`PrefectProgress`). Both update one artifact (:class:`ProgressArtifact`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prefect.artifacts import create_progress_artifact, update_progress_artifact

PROGRESS_KEY = "training-progress"


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
