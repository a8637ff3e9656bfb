"""Start and stop a local MLflow tracking server (for ``ganops up``/``ganops down`` and tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from gan_models.errors import GanopsError
from gan_models.utils.paths import project_root


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_mlflow_server(
    host: str = "127.0.0.1",
    port: int = 5000,
    backend_uri: str | None = None,
    artifacts_dir: str | Path | None = None,
    log_file: str | Path | None = None,
    *,
    workers: int = 1,
    timeout: float = 120.0,
) -> subprocess.Popen:
    """Start ``mlflow server`` and return once ``/health`` answers.

    Defaults: ``sqlite:///<project root>/mlflow.db``, artifacts served from
    ``<project root>/mlartifacts``, log in ``<project root>/mlflow-server.log``. The server gets
    its own process group, so :func:`stop_process` stops its workers too. If it exits or does
    not answer within ``timeout`` seconds it is stopped and the error shows the log's tail.
    """
    root = project_root()
    backend_uri = backend_uri or f"sqlite:///{root / 'mlflow.db'}"
    artifacts = Path(artifacts_dir or root / "mlartifacts").resolve()
    log_path = Path(log_file or root / "mlflow-server.log")
    url = f"http://{host}:{port}"
    if _port_taken(host, port):
        raise GanopsError(
            f"port {port} on {host} is already in use"
            + (" by a running MLflow server" if _healthy(url) else "")
            + "; choose another port or stop what listens there"
        )
    artifacts.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(artifacts),
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    wait_until_ready(lambda: _healthy(url), proc, f"mlflow server on {url}", log_path, timeout)
    return proc


def wait_until_ready(
    ready: Callable[[], bool], proc: subprocess.Popen, what: str, log: Path, timeout: float
) -> None:
    """Poll ``ready`` until it holds; a process that exits or never answers is an error that
    shows its log's tail (and a process that never answers is stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GanopsError(
                f"{what} exited with code {proc.returncode} before answering; "
                f"log {log}:\n{tail(log)}"
            )
        if ready():
            return
        time.sleep(0.25)
    stop_process(proc.pid)
    raise GanopsError(f"{what} did not answer within {timeout:.0f} s; log {log}:\n{tail(log)}")


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process(pid: int, timeout: float = 15.0) -> bool:
    """Stop a process and, when it leads one, its process group: SIGTERM, then SIGKILL.

    Returns False if it was not running.
    """
    if not _alive(pid):
        return False
    try:
        group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return False

    def running() -> bool:
        # The leader's workers may outlive it for a moment; wait for the whole group.
        return _alive(pid) or (group and _group_alive(pid))

    def send(sig: int) -> None:
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    if running():
        send(signal.SIGKILL)
        while running() and time.monotonic() < deadline + 5:
            time.sleep(0.1)
    return True
