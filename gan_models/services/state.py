"""The record of the processes ``ganops up`` started: ``.ganops/services.json``.

Each service is recorded with its PID, its start time and command line, port, URL and log file.
The start time and command line tell the process that was started from a later one that got its
PID (PIDs are reused), so ``down`` stops exactly the processes ``up`` started.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from gan_models.errors import GanopsError
from gan_models.utils.io import write_json_atomic

# What `up` records and writes, and the logs, live in this folder of the project root.
STATE_DIR = ".ganops"
STATE_FILE = "services.json"


@dataclass
class Service:
    """A process ``up`` started, as recorded in .ganops/services.json."""

    name: str
    pid: int
    create_time: float  # with the command line, tells this process from a later one with its PID
    cmdline: list[str]
    log: str
    url: str | None = None
    port: int | None = None

    def process(self) -> psutil.Process | None:
        """The running process, if the PID still belongs to the one that was started."""
        try:
            p = psutil.Process(self.pid)
            same = abs(p.create_time() - self.create_time) < 0.01 and p.cmdline() == self.cmdline
            return p if same and p.status() != psutil.STATUS_ZOMBIE else None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None


def record(name: str, proc: subprocess.Popen | psutil.Process, log: Path, **kw: Any) -> Service:
    """The record of a process just started (its start time and command line read now)."""
    p = psutil.Process(proc.pid)
    return Service(name, proc.pid, p.create_time(), p.cmdline(), str(log), **kw)


def state_path(root: Path) -> Path:
    return root / STATE_DIR / STATE_FILE


def load_state(root: Path) -> dict[str, Service]:
    """The recorded services (empty if none)."""
    path = state_path(root)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {k: Service(**v) for k, v in (data.get("services") or {}).items()}
    except (json.JSONDecodeError, TypeError) as e:
        raise GanopsError(f"{path}: not a services record ({e}); remove it and stop the "
                          "services by hand") from None  # fmt: skip


def save_state(root: Path, services: dict[str, Service]) -> None:
    """Record ``services``; with none left, the file is removed."""
    path = state_path(root)
    if not services:
        path.unlink(missing_ok=True)
        return
    write_json_atomic(
        path, {"root": str(root), "services": {k: asdict(v) for k, v in services.items()}}
    )


class Running:
    """The recorded services of ``root`` still running, and those ``up`` starts now.

    :meth:`add` records each start at once, so ``down`` can stop it even if ``up`` fails later.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.services = {k: v for k, v in load_state(root).items() if v.process() is not None}
        self.started: list[str] = []

    def add(self, svc: Service) -> None:
        self.services[svc.name] = svc
        self.started.append(svc.name)
        save_state(self.root, self.services)
