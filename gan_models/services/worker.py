"""``ganops worker --server URL``: this host becomes a worker of the team's ``gpu`` work pool.

From a checkout of the project, with the client environment of the team (what ``ganops env``
prints on the services host: the Prefect API URL and auth string, MLflow's credentials, the S3
keys and endpoint, the Optuna storage, the checkpoint store), in this order of precedence:

1. the environment (``eval "$(ganops env)"`` there, or the same variables set by hand);
2. the secrets file (``$GANOPS_SECRETS_FILE``, ``~/.config/ganops/secrets.env``) with
   ``params/services.yaml``, for a host that holds them (the services host itself).

Never from a params file. Then it checks that the Prefect API answers with those credentials
and holds the pool (and MLflow too, when a tracking URI is set), optionally ``dvc pull``s what
the deployments need, and replaces itself with ``prefect worker start --pool gpu --limit N``:
N slots, one per GPU (``torch.cuda.device_count()``, 1 on a CPU-only host, or ``--slots``).
Each flow run holds one GPU through its lock file (gan_models/gpu.py), so trials are pinned one
per GPU.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from gan_models.errors import ConfigError, GanopsError
from gan_models.services.prefect_setup import POOL
from gan_models.services.processes import base_env
from gan_models.services.team import http_status

# What ``ganops env`` prints; the first two are needed to join, the rest by the flow runs.
REQUIRED = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING")
CLIENT_KEYS = (
    *REQUIRED, "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    "GANOPS_OPTUNA_STORAGE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION", "GANOPS_CHECKPOINT_STORE",
)  # fmt: skip


def api_url(server: str) -> str:
    """``http://HOST:PORT`` (or its ``/api``) as the API URL clients use."""
    server = server.rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise ConfigError(f"--server: expected the Prefect server's URL (http://HOST:PORT), "
                          f"got {server!r}")  # fmt: skip
    return server if server.endswith("/api") else f"{server}/api"


def client_environment(root: Path, services: Path | None = None) -> dict[str, str]:
    """The team's client environment: the environment first, then the secrets file."""
    env = {k: os.environ[k] for k in CLIENT_KEYS if os.environ.get(k)}
    missing = [k for k in CLIENT_KEYS if k not in env]
    from gan_models.services.secrets import secrets_path

    if missing and secrets_path().is_file():
        from gan_models.services.secrets import load_secrets
        from gan_models.services.team import client_env, required_secrets
        from gan_models.services.team_config import DEFAULT_FILE, load_services_config

        path = services if services is not None else root / DEFAULT_FILE
        if path.is_file():
            cfg = load_services_config(path)
            if cfg.mode == "team":
                sec = load_secrets(required=required_secrets(cfg)[0])
                env = {**client_env(cfg, sec), **env}
    return env


def check_access(env: dict[str, str], pool: str = POOL) -> None:
    """The Prefect API (and MLflow, if set) answer with these credentials; the pool exists."""
    api = env["PREFECT_API_URL"]
    auth = tuple(env["PREFECT_API_AUTH_STRING"].split(":", 1))
    code = http_status(f"{api}/admin/version", auth)  # type: ignore[arg-type]
    if code == 0:
        raise GanopsError(f"--server: no Prefect API answers at {api} from this host")
    if code in (401, 403):
        raise GanopsError(f"PREFECT_API_AUTH_STRING: refused by the Prefect API at {api} "
                          f"(HTTP {code}); export the team's `ganops env`")  # fmt: skip
    if code != 200:
        raise GanopsError(f"--server: the Prefect API at {api} answered HTTP {code}")
    code = http_status(f"{api}/work_pools/{pool}", auth)  # type: ignore[arg-type]
    if code != 200:
        raise GanopsError(f"work pool {pool!r}: not found on {api} (HTTP {code}); "
                          "`ganops up --team` creates it")  # fmt: skip
    uri = env.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith("http"):
        creds = (env.get("MLFLOW_TRACKING_USERNAME", ""), env.get("MLFLOW_TRACKING_PASSWORD", ""))
        code = http_status(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", creds)
        if code != 200:
            raise GanopsError(f"MLFLOW_TRACKING_PASSWORD: the MLflow server at {uri} answered "
                              f"HTTP {code} with these credentials")  # fmt: skip


def gpu_count() -> int:
    """GPUs torch sees on this host (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def slots_for(slots: int | None, gpus: int) -> int:
    """Flow runs at once: ``--slots``, else one per GPU, else 1."""
    if slots is not None and slots < 1:
        raise ConfigError(f"--slots: expected 1 or more, got {slots}")
    return slots or max(1, gpus)


def dvc_pull(root: Path, targets: list[str], env: dict[str, str]) -> None:
    """``dvc pull TARGETS`` with the team's S3 keys (the remote is in the project's config)."""
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "pull", *targets],
        cwd=root,
        env={**os.environ, "DVC_NO_ANALYTICS": "1", **env},
        capture_output=True,
        text=True,
    )
    if out.returncode:
        tail = (out.stdout + out.stderr).strip().splitlines()
        raise GanopsError(f"--pull {' '.join(targets)}: dvc pull failed: "
                          f"{tail[-1] if tail else out.returncode}")  # fmt: skip


def worker_command(root: Path, pool: str, slots: int) -> tuple[list[str], str]:
    name = f"ganops-{socket.gethostname()}-{root.name}"
    cmd = [
        sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
        "--limit", str(slots), "--name", name,
    ]  # fmt: skip
    return cmd, name


def worker_process_env(root: Path, client: dict[str, str], gpus: int) -> dict[str, str]:
    """The worker's environment: the client's, its checkout for the flow runs, its GPUs."""
    env = {**base_env(root), **client, "GANOPS_PROJECT_DIR": str(root)}
    if gpus and "GANOPS_GPUS" not in env:
        # the lock files of gan_models/gpu.py then cover exactly the GPUs the slots count
        env["GANOPS_GPUS"] = ",".join(str(i) for i in range(gpus))
    return env
