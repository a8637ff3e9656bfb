"""``ganops up`` / ``down`` / ``status``: the local services of a ganops checkout.

``up`` starts, on 127.0.0.1 with usage analytics off:

- a Prefect server (API and UI, default port 4200; its database in ``.ganops/prefect/``),
- the MLflow tracking server (default port 5000; ``mlflow.db`` and ``mlartifacts/`` in the
  project root, as the embedded default uses them),
- a process work pool (``--pool``, default ``gpu``) and the deployments of prefect.yaml on it
  (``prefect deploy --all`` of a copy of prefect.yaml whose deployments name that pool, since
  Prefect ignores ``--pool`` when it deploys several at once),
- a local worker on that pool (``--limit``: one flow run per GPU, one on a CPU host),

waits until each answers and records what it started in ``.ganops/services.json`` (PID, its
start time and command line, port, URL, log file). ``down`` stops exactly those processes,
after checking that each PID still belongs to the process that was started (PIDs are reused).
``up`` is idempotent: a recorded service that still runs is left alone. Logs go to
``.ganops/logs/``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from gan_models.errors import ConfigError, GanopsError
from gan_models.utils.io import write_json_atomic
from gan_models.utils.paths import project_root

# What `up` records and writes, and the logs, live in this folder of the project root.
STATE_DIR = ".ganops"
STATE_FILE = "services.json"
HOST = "127.0.0.1"
PREFECT_PORT = 4200
MLFLOW_PORT = 5000
POOL = "gpu"
# Stopped in this order: the worker first, so that it takes no new flow run meanwhile.
ORDER = ("worker", "prefect", "mlflow")
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}


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


@dataclass
class ServiceStatus:
    """What ``status`` reports for one service."""

    name: str
    pid: int
    running: bool
    answering: bool
    url: str | None
    log: str


# ----------------------------------------------------------------------------- state


def state_path(root: Path) -> Path:
    return root / STATE_DIR / STATE_FILE


def load_state(root: Path) -> dict[str, Service]:
    """The recorded services (empty if none)."""
    import json

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
    path = state_path(root)
    if not services:
        path.unlink(missing_ok=True)
        return
    write_json_atomic(
        path, {"root": str(root), "services": {k: asdict(v) for k, v in services.items()}}
    )


# ----------------------------------------------------------------------------- processes


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def prefect_api(url: str) -> str:
    """The API URL of a Prefect server's base URL."""
    return url.rstrip("/") + "/api"


def _record(name: str, proc: subprocess.Popen | psutil.Process, log: Path, **kw: Any) -> Service:
    p = psutil.Process(proc.pid)
    return Service(name, proc.pid, p.create_time(), p.cmdline(), str(log), **kw)


def _spawn(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        # Its own session: it outlives `ganops up`, and `down` stops its whole process group.
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True,
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
    proc = _spawn(cmd, env, root, log)
    from gan_models.tracking.server import wait_until_ready

    wait_until_ready(lambda: _get_ok(f"{url}/api/health"), proc, "prefect server", log, timeout)
    return _record("prefect", proc, log, url=url, port=port)


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
    return _record("mlflow", proc, log, url=f"http://{host}:{port}", port=port)


def _client(api_url: str):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api_url)


def ensure_work_pool(api_url: str, pool: str) -> bool:
    """Create the process work pool ``pool`` if missing; True if it was created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    with _client(api_url) as client:
        try:
            client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", base_job_template=template)
            )
            return True
        except ObjectAlreadyExists:
            existing = client.read_work_pool(pool)
            if existing.type != "process":
                raise GanopsError(
                    f"work pool {pool!r} exists with type {existing.type!r}, not 'process'"
                ) from None
            return False


@dataclass(frozen=True)
class Deployment:
    """A deployment of prefect.yaml, as ``up`` reports it."""

    name: str
    schedules: tuple[str, ...] = ()  # cron expressions (or other schedule kinds, as given)

    def __str__(self) -> str:
        return self.name + (f" ({', '.join(self.schedules)})" if self.schedules else "")


def read_deployments(root: Path) -> tuple[dict[str, Any], list[Deployment]]:
    """prefect.yaml of the project, and its deployments (ConfigError naming what is wrong)."""
    import yaml

    path = root / "prefect.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; nothing to deploy")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    entries = data.get("deployments") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: deployments: expected a list of deployments")
    out = []
    for i, d in enumerate(entries):
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise ConfigError(f"{path}: deployments[{i}]: expected a mapping with a name")
        kinds = [
            str(s.get("cron") or s.get("interval") or s.get("rrule") or "schedule")
            for s in d.get("schedules") or []
            if isinstance(s, dict)
        ]
        out.append(Deployment(d["name"], tuple(f"schedule {k}" for k in kinds)))
    return data, out


def deploy(root: Path, api_url: str, pool: str = POOL, timeout: float = 300) -> list[Deployment]:
    """Every deployment of prefect.yaml onto the work pool ``pool``: ``prefect deploy --all`` of a
    copy of the file in which each deployment names ``pool`` (prefect.yaml itself is not
    changed). Returns the deployments."""
    import yaml

    data, deployments = read_deployments(root)
    for d in data["deployments"]:
        work_pool = d.get("work_pool") if isinstance(d.get("work_pool"), dict) else {}
        d["work_pool"] = {**work_pool, "name": pool}
    state = root / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    copy = state / f"prefect-deploy-{os.getpid()}.yaml"
    tmp = copy.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(copy)
    env = {**base_env(root), "PREFECT_API_URL": api_url}
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    try:
        out = subprocess.run(
            [*cmd, "--prefect-file", str(copy)],
            cwd=root,  # entrypoints are relative to the project
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        copy.unlink(missing_ok=True)
    if out.returncode:
        raise GanopsError(
            f"prefect deploy --all (pool {pool!r}) failed:\n{(out.stdout + out.stderr)[-3000:]}"
        )
    return deployments


def _worker_online(api_url: str, pool: str, name: str) -> bool:
    from prefect.client.schemas.objects import WorkerStatus

    try:
        with _client(api_url) as client:
            workers = client.read_workers_for_work_pool(pool)
    except Exception:  # noqa: BLE001 - not up yet
        return False
    return any(w.name == name and w.status == WorkerStatus.ONLINE for w in workers)


def start_worker(
    root: Path,
    api_url: str,
    pool: str,
    limit: int,
    timeout: float,
    mlflow_uri: str | None = None,
) -> Service:
    """A process worker on ``pool`` running flow runs in this checkout, ``limit`` at a time."""
    name = f"ganops-{socket.gethostname()}-{root.name}"
    env = {**base_env(root), "PREFECT_API_URL": api_url, "GANOPS_PROJECT_DIR": str(root)}
    if mlflow_uri:
        env["MLFLOW_TRACKING_URI"] = mlflow_uri
    log = root / STATE_DIR / "logs" / "worker.log"
    cmd = [
        sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
        "--limit", str(limit), "--name", name,
    ]  # fmt: skip
    proc = _spawn(cmd, env, root, log)
    from gan_models.tracking.server import wait_until_ready

    wait_until_ready(
        lambda: _worker_online(api_url, pool, name), proc, "prefect worker", log, timeout
    )
    return _record("worker", proc, log, url=None)


# ----------------------------------------------------------------------------- up/down/status


@dataclass
class UpResult:
    """What ``up`` did: the services (started now or already running) and the env to export."""

    services: dict[str, Service]
    started: list[str]
    env: dict[str, str]
    deployed: bool
    deployments: list[Deployment]  # those of prefect.yaml, on ``pool`` (empty if not deployed)
    pool: str


def exports(services: dict[str, Service]) -> dict[str, str]:
    """The environment variables that point clients at the running servers."""
    env = {}
    if "prefect" in services and services["prefect"].url:
        env["PREFECT_API_URL"] = prefect_api(services["prefect"].url)
    if "mlflow" in services and services["mlflow"].url:
        env["MLFLOW_TRACKING_URI"] = services["mlflow"].url
    return env


def up(
    root: str | Path | None = None,
    *,
    prefect: bool = True,
    mlflow: bool = True,
    worker: bool = True,
    host: str = HOST,
    prefect_port: int = PREFECT_PORT,
    mlflow_port: int = MLFLOW_PORT,
    pool: str = POOL,
    limit: int | None = None,
    timeout: float = 180.0,
    echo: Callable[[str], None] = print,
) -> UpResult:
    """Start what is not running yet, record it, and return the services and their env vars.

    ``limit`` is the worker's number of concurrent flow runs (default: the host's GPUs, or 1).
    Without ``prefect``, the work pool, deployments and worker use ``$PREFECT_API_URL``.
    """
    if not pool.strip():
        raise ConfigError("--pool: expected the name of a work pool, got an empty string")
    root = project_root(root)
    services = {k: v for k, v in load_state(root).items() if v.process() is not None}
    started: list[str] = []

    def add(svc: Service) -> None:
        services[svc.name] = svc
        started.append(svc.name)
        save_state(root, services)  # recorded at once, so `down` can stop it even if up fails

    if prefect:
        if "prefect" in services:
            echo(f"prefect: already running (pid {services['prefect'].pid})")
        else:
            echo(f"prefect: starting on {host}:{prefect_port} ...")
            add(start_prefect(root, host, prefect_port, timeout))
    if mlflow:
        if "mlflow" in services:
            echo(f"mlflow: already running (pid {services['mlflow'].pid})")
        else:
            echo(f"mlflow: starting on {host}:{mlflow_port} ...")
            add(start_mlflow(root, host, mlflow_port, timeout))
    env = exports(services)
    api_url = env.get("PREFECT_API_URL") or os.environ.get("PREFECT_API_URL")
    deployments: list[Deployment] = []
    if (prefect or worker) and api_url:
        read_deployments(root)  # a broken prefect.yaml is refused before the pool is created
        if ensure_work_pool(api_url, pool):
            echo(f"work pool {pool!r}: created (type process)")
        echo(f"deploying prefect.yaml on pool {pool!r} ...")
        deployments = deploy(root, api_url, pool)
    if worker:
        if api_url is None:
            raise GanopsError(
                "the worker needs a Prefect server: drop --no-prefect or set PREFECT_API_URL"
            )
        if "worker" in services:
            echo(f"worker: already running (pid {services['worker'].pid})")
        else:
            from gan_models.gpu import host_gpus

            n = limit or max(1, len(host_gpus()))
            echo(f"worker: starting on pool {pool!r} (limit {n}) ...")
            mlflow_uri = env.get("MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
            add(start_worker(root, api_url, pool, n, timeout, mlflow_uri))
    save_state(root, services)
    return UpResult(services, started, env, bool(deployments), deployments, pool)


def down(root: str | Path | None = None, echo: Callable[[str], None] = print) -> list[str]:
    """Stop the recorded services that are still the processes ``up`` started; forget them all.

    Returns the names of the services it stopped.
    """
    from gan_models.tracking.server import stop_process

    root = project_root(root)
    services = load_state(root)
    stopped = []
    for name in sorted(services, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        svc = services[name]
        if svc.process() is None:
            echo(f"{name}: not running (pid {svc.pid} is gone or is another process now)")
        else:
            stop_process(svc.pid)
            stopped.append(name)
            echo(f"{name}: stopped (pid {svc.pid})")
        del services[name]
        save_state(root, services)
    return stopped


def status(root: str | Path | None = None) -> list[ServiceStatus]:
    """Each recorded service: running (same process), answering (health check), URL, log."""
    root = project_root(root)
    services = load_state(root)
    out = []
    api = exports(services).get("PREFECT_API_URL")
    for name, svc in services.items():
        running = svc.process() is not None
        answering = False
        if running and name == "prefect":
            answering = _get_ok(f"{api}/health")
        elif running and name == "mlflow":
            answering = _get_ok(f"{svc.url}/health")
        elif running and name == "worker" and api:
            with contextlib.suppress(IndexError, ValueError):
                cmd = svc.cmdline
                answering = _worker_online(
                    api, cmd[cmd.index("--pool") + 1], cmd[cmd.index("--name") + 1]
                )
        out.append(ServiceStatus(name, svc.pid, running, answering, svc.url, svc.log))
    return out
