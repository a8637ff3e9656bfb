"""What ``ganops up`` sets up on a Prefect server: the work pool, the deployments, the worker.

- a process work pool (``--pool``, default ``gpu``),
- the deployments of prefect.yaml on it: ``prefect deploy --all`` of a copy of prefect.yaml whose
  deployments name that pool, since Prefect ignores ``--pool`` when it deploys several at once
  (prefect.yaml itself is not changed),
- a local worker on that pool, running flow runs in this checkout (``--limit`` at a time: one
  flow run per GPU, one on a CPU host), ready once the server lists it online.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gan_models.errors import ConfigError, GanopsError
from gan_models.services.processes import base_env, spawn
from gan_models.services.state import STATE_DIR, Service, record

POOL = "gpu"


def _client(api_url: str, auth_string: str | None = None):
    from prefect.client.orchestration import SyncPrefectClient

    # A team server (PREFECT_SERVER_API_AUTH_STRING) refuses requests without it.
    return SyncPrefectClient(api_url, auth_string=auth_string)


def _auth_env(auth_string: str | None) -> dict[str, str]:
    return {"PREFECT_API_AUTH_STRING": auth_string} if auth_string else {}


def ensure_work_pool(api_url: str, pool: str, auth_string: str | None = None) -> bool:
    """Create the process work pool ``pool`` if missing; True if it was created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    with _client(api_url, auth_string) as client:
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


def deploy(
    root: Path,
    api_url: str,
    pool: str = POOL,
    timeout: float = 300,
    auth_string: str | None = None,
) -> list[Deployment]:
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
    env = {**base_env(root), "PREFECT_API_URL": api_url, **_auth_env(auth_string)}
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


def worker_online(api_url: str, pool: str, name: str, auth_string: str | None = None) -> bool:
    """Whether the server lists the worker ``name`` on ``pool`` as online."""
    from prefect.client.schemas.objects import WorkerStatus

    try:
        with _client(api_url, auth_string) as client:
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
    proc = spawn(cmd, env, root, log)
    from gan_models.tracking.server import wait_until_ready

    wait_until_ready(
        lambda: worker_online(api_url, pool, name), proc, "prefect worker", log, timeout
    )
    return record("worker", proc, log, url=None)
