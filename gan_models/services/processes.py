"""The server processes of ``ganops up``: spawning them and checking that they answer.

Servers listen on 127.0.0.1 with usage analytics off:

- a Prefect server (API and UI, default port 4200; its database in ``.ganops/prefect/``),
- the MLflow tracking server (default port 5000; ``mlflow.db`` and ``mlartifacts/`` in the
  project root, as the embedded default uses them).

Each runs in its own session, so it outlives ``ganops up``; its log goes to ``.ganops/logs/``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from gan_models.errors import GanopsError
from gan_models.services.state import STATE_DIR, Service, record

HOST = "127.0.0.1"
PREFECT_PORT = 4200
MLFLOW_PORT = 5000
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def get_ok(url: str) -> bool:
    """Whether a GET of ``url`` answers 200 (within a few seconds)."""
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def prefect_api(url: str) -> str:
    """The API URL of a Prefect server's base URL."""
    return url.rstrip("/") + "/api"


def spawn(
    cmd: list[str], env: dict[str, str], cwd: Path, log: Path, user: str | None = None
) -> subprocess.Popen:
    """Start ``cmd`` in the background (as ``user``, if given), its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    ids = {}
    if user:
        import pwd

        # its own group too, with no supplementary groups (root's would stay otherwise)
        ids = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
    with open(log, "ab") as f:
        # Its own session: it outlives `ganops up`, and `down` stops its whole process group.
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True, **ids,
        )  # fmt: skip


def base_env(root: Path) -> dict[str, str]:
    """Environment of every service: analytics off, the venv's tools first on PATH."""
    env = {**os.environ, **QUIET_ENV}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PREFECT_HOME"] = str(root / STATE_DIR / "prefect")
    return env


def start_prefect(root: Path, host: str, port: int, timeout: float) -> Service:
    """``prefect server start`` (API + UI), returned once /api/health answers."""
    url = f"http://{host}:{port}"
    if _port_taken(host, port):
        raise GanopsError(
            f"port {port} on {host} is already in use; stop what listens there or choose "
            "another with --prefect-port"
        )
    env = base_env(root)
    env.pop("PREFECT_API_URL", None)  # the server is the API; a client setting would confuse it
    # The UI's pages call the API at this URL; `--port` alone leaves it at :4200.
    env.setdefault("PREFECT_UI_API_URL", f"{url}/api")
    log = root / STATE_DIR / "logs" / "prefect-server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    proc = spawn(cmd, env, root, log)
    from gan_models.tracking.server import wait_until_ready

    wait_until_ready(lambda: get_ok(f"{url}/api/health"), proc, "prefect server", log, timeout)
    return record("prefect", proc, log, url=url, port=port)


def start_mlflow(root: Path, host: str, port: int, timeout: float) -> Service:
    """The MLflow server on the project's store (``mlflow.db``, ``mlartifacts/``)."""
    from gan_models.tracking.server import start_mlflow_server

    log = root / STATE_DIR / "logs" / "mlflow-server.log"
    old = {k: os.environ.get(k) for k in QUIET_ENV}
    os.environ.update(QUIET_ENV)  # start_mlflow_server passes this process's environment on
    try:
        proc = start_mlflow_server(
            host,
            port,
            backend_uri=f"sqlite:///{root / 'mlflow.db'}",
            artifacts_dir=root / "mlartifacts",
            log_file=log,
            timeout=timeout,
        )
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return record("mlflow", proc, log, url=f"http://{host}:{port}", port=port)
