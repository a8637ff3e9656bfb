"""``ganops up``, ``down`` and ``status``: the local services of a ganops checkout, together.

``up`` starts what is not running yet: the Prefect and MLflow servers (:mod:`.processes`), then
the work pool, the deployments of prefect.yaml and a local worker (:mod:`.prefect_setup`). It
waits until each answers and records each service in ``.ganops/services.json`` (:mod:`.state`)
as soon as it is started, so ``down`` can stop it even if ``up`` fails later. ``up`` is
idempotent: a recorded service that still runs is left alone. ``down`` stops exactly the
recorded processes, after checking that each PID still belongs to the process that was started
(PIDs are reused), the worker first. ``status`` says of each whether it runs and answers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gan_models.errors import ConfigError, GanopsError
from gan_models.services.prefect_setup import (
    POOL,
    Deployment,
    deploy,
    ensure_work_pool,
    read_deployments,
    start_worker,
    worker_online,
)
from gan_models.services.processes import (
    HOST,
    MLFLOW_PORT,
    PREFECT_PORT,
    _port_taken,
    get_ok,
    prefect_api,
    start_mlflow,
    start_prefect,
)
from gan_models.services.state import Running, Service, load_state, save_state
from gan_models.utils.paths import project_root

# Stopped in this order: the worker first, so that it takes no new flow run meanwhile; the
# stores of team mode (:mod:`.team`) last, once nothing uses them.
ORDER = ("worker", "prefect", "mlflow", "s3", "postgres")


@dataclass
class ServiceStatus:
    """What ``status`` reports for one service."""

    name: str
    pid: int
    running: bool
    answering: bool
    url: str | None
    log: str


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
    running = Running(root)
    services, started, add = running.services, running.started, running.add

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
            if name == "postgres":
                from gan_models.services.postgres import stop_server

                stop_server(svc.pid)
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
            answering = get_ok(f"{api}/health")
        elif running and name == "mlflow":
            answering = get_ok(f"{svc.url}/health")
        elif running and name in ("postgres", "s3") and svc.port:
            # they answer only with credentials; an open port is what can be checked without
            host = (svc.url or "").split("//")[-1].rsplit(":", 1)[0] or HOST
            answering = _port_taken(host, svc.port)
        elif running and name == "worker" and api:
            with contextlib.suppress(IndexError, ValueError):
                cmd = svc.cmdline
                answering = worker_online(
                    api, cmd[cmd.index("--pool") + 1], cmd[cmd.index("--name") + 1]
                )
        out.append(ServiceStatus(name, svc.pid, running, answering, svc.url, svc.log))
    return out
