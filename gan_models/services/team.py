"""``ganops up --team``: the services of ``params/services.yaml``, each behind credentials.

In order, each started only if it does not run yet (recorded in ``.ganops/services.json`` as in
local mode, so ``ganops down`` stops them all and ``ganops status`` shows them):

1. PostgreSQL (``postgres.start``: our own from ``initdb``), then a password role and a
   database per service: prefect, mlflow, mlflow_auth (MLflow's users), optuna;
2. the S3 endpoint (``s3.start``: ``rclone serve s3``), then the bucket;
3. the Prefect server on its database, with the server-side auth string
   (``PREFECT_SERVER_API_AUTH_STRING``; clients send ``PREFECT_API_AUTH_STRING``);
4. the MLflow server on its database, artifacts proxied to ``s3://BUCKET/mlflow`` (the S3 keys
   are the server's only), with MLflow's built-in authentication (``--app-name basic-auth``,
   its users in their own database, the admin's password from the secrets), started side by
   side with Prefect;
5. the DVC remote ``s3://BUCKET/PREFIX`` with the endpoint in the project's DVC config, and in
   its local (uncommitted) config the path of a credentials file beside the secrets file;
6. the ``gpu`` process work pool and prefect.yaml's deployments on it (when the project has a
   prefect.yaml), through the authenticated API; GPU hosts join it with ``ganops worker``
   (:mod:`.worker`).

Credentials reach the servers through their environment or files readable by their owner only,
never through a command line (which other users can read in the process list) or a params file.
:func:`client_env` is what a user or a worker exports to use them (``ganops env``).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gan_models.errors import GanopsError
from gan_models.services import postgres as pg
from gan_models.services import s3 as s3mod
from gan_models.services import secrets as S
from gan_models.services.processes import _port_taken, base_env, spawn
from gan_models.services.state import STATE_DIR, Running, Service, record, save_state
from gan_models.services.team_config import ServicesConfig
from gan_models.utils.io import atomic_path

MLFLOW_PREFIX = "mlflow"
CHECKPOINT_PREFIX = "checkpoints"  # trials' checkpoints, so a retry resumes on any host


def http_status(url: str, auth: tuple[str, str] | None = None, timeout: float = 5) -> int:
    """The HTTP status of a GET of ``url`` (with Basic auth if given); 0 if nothing answers."""
    req = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def required_secrets(cfg: ServicesConfig) -> tuple[list[str], list[str]]:
    """The credentials this configuration needs, and those ganops may generate."""
    required = list(S.ALL)
    generate = [n for n in S.ALL if n not in (S.S3_KEY_ID, S.S3_SECRET, S.PG_SUPERUSER)]
    if cfg.s3.start:  # our endpoint accepts whatever keys we give it
        generate += [S.S3_KEY_ID, S.S3_SECRET]
    if cfg.postgres.start:  # our cluster gets its superuser password at initdb
        generate.append(S.PG_SUPERUSER)
    return required, generate


def _owner_only(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_path(path) as tmp:
        os.chmod(tmp, 0o600)
        tmp.write_text(text)


def prefect_auth(cfg: ServicesConfig, sec: S.Secrets) -> str:
    return f"{cfg.prefect.username}:{sec[S.PREFECT_PASSWORD]}"


def db_url(cfg: ServicesConfig, sec: S.Secrets, name: str, driver: str = "postgresql") -> str:
    return pg.url(driver, cfg.pg_host, cfg.postgres.port, name, sec[S.PG_PASSWORDS[name]])


def client_env(cfg: ServicesConfig, sec: S.Secrets) -> dict[str, str]:
    """What a user or a worker exports to use the team services (``ganops env``)."""
    return {
        "PREFECT_API_URL": f"{cfg.prefect_url}/api",
        "PREFECT_API_AUTH_STRING": prefect_auth(cfg, sec),
        "MLFLOW_TRACKING_URI": cfg.mlflow_url,
        "MLFLOW_TRACKING_USERNAME": cfg.mlflow.admin_username,
        "MLFLOW_TRACKING_PASSWORD": sec[S.MLFLOW_ADMIN_PASSWORD],
        # params/tune.yaml reads it as `storage: ${GANOPS_OPTUNA_STORAGE}`
        "GANOPS_OPTUNA_STORAGE": db_url(cfg, sec, "optuna"),
        "AWS_ACCESS_KEY_ID": sec[S.S3_KEY_ID],
        "AWS_SECRET_ACCESS_KEY": sec[S.S3_SECRET],
        "AWS_ENDPOINT_URL": cfg.s3_endpoint,
        "AWS_DEFAULT_REGION": cfg.s3.region,
        # read by gan_models.tuning.checkpoint_store: where trials' checkpoints are kept
        "GANOPS_CHECKPOINT_STORE": f"s3://{cfg.s3.bucket}/{CHECKPOINT_PREFIX}",
    }


def start_prefect(root: Path, cfg: ServicesConfig, sec: S.Secrets, timeout: float) -> Service:
    """``prefect server start`` on PostgreSQL with the API's auth string, once it answers."""
    from gan_models.tracking.server import wait_until_ready

    bind, port = cfg.bind, cfg.prefect.port
    if _port_taken(bind, port):
        raise GanopsError(f"prefect.port: {port} on {bind} is already in use")
    env = base_env(root)
    for k in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY"):
        env.pop(k, None)  # the server is the API; client settings would confuse it
    env.update(
        PREFECT_API_DATABASE_CONNECTION_URL=db_url(cfg, sec, "prefect", "postgresql+asyncpg"),
        PREFECT_SERVER_API_AUTH_STRING=prefect_auth(cfg, sec),
        PREFECT_UI_API_URL=f"{cfg.prefect_url}/api",
    )
    log = root / STATE_DIR / "logs" / "prefect-server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", bind, "--port", str(port)]
    proc = spawn(cmd, env, root, log)
    url = f"http://{bind}:{port}"
    auth = tuple(prefect_auth(cfg, sec).split(":", 1))
    wait_until_ready(
        lambda: http_status(f"{url}/api/admin/version", auth) == 200,  # type: ignore[arg-type]
        proc, "prefect server", log, timeout,
    )  # fmt: skip
    return record("prefect", proc, log, url=cfg.prefect_url, port=port)


def _allowed_hosts(cfg: ServicesConfig) -> str:
    names = ["localhost", "127.0.0.1", cfg.bind, cfg.public_host, *cfg.mlflow.allowed_hosts]
    port = cfg.mlflow.port
    return ",".join(dict.fromkeys([h for n in names for h in (n, f"{n}:{port}")]))


def start_mlflow(root: Path, cfg: ServicesConfig, sec: S.Secrets, timeout: float) -> Service:
    """The MLflow server on PostgreSQL, artifacts on S3, with its basic-auth app."""
    from gan_models.tracking.server import wait_until_ready

    bind, port = cfg.bind, cfg.mlflow.port
    if _port_taken(bind, port):
        raise GanopsError(f"mlflow.port: {port} on {bind} is already in use")
    # Its users' database URL holds a password: the file sits beside the secrets, owner-only.
    auth_ini = sec.path.parent / "mlflow-basic-auth.ini"
    _owner_only(
        auth_ini,
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {db_url(cfg, sec, 'mlflow_auth')}\n"
        f"admin_username = {cfg.mlflow.admin_username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    env = base_env(root)
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(k, None)
    env.update(
        MLFLOW_BACKEND_STORE_URI=db_url(cfg, sec, "mlflow"),
        MLFLOW_AUTH_CONFIG_PATH=str(auth_ini),
        MLFLOW_AUTH_ADMIN_PASSWORD=sec[S.MLFLOW_ADMIN_PASSWORD],
        MLFLOW_FLASK_SERVER_SECRET_KEY=sec[S.MLFLOW_SECRET_KEY],
        # the artifact store's keys are the server's only: clients go through its proxy
        MLFLOW_S3_ENDPOINT_URL=cfg.s3_endpoint,
        AWS_ACCESS_KEY_ID=sec[S.S3_KEY_ID],
        AWS_SECRET_ACCESS_KEY=sec[S.S3_SECRET],
        AWS_DEFAULT_REGION=cfg.s3.region,
        # without it the server starts 7 job consumers and takes 2.8 GB instead of 550 MB
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    log = root / STATE_DIR / "logs" / "mlflow-server.log"
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
        "--artifacts-destination", f"s3://{cfg.s3.bucket}/{MLFLOW_PREFIX}",
        "--host", bind, "--port", str(port), "--workers", "1",
        "--allowed-hosts", _allowed_hosts(cfg),
    ]  # fmt: skip
    proc = spawn(cmd, env, root, log)
    url = f"http://{bind}:{port}"
    auth = (cfg.mlflow.admin_username, sec[S.MLFLOW_ADMIN_PASSWORD])
    probe = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    wait_until_ready(lambda: http_status(probe, auth) == 200, proc, "mlflow server", log, timeout)
    return record("mlflow", proc, log, url=cfg.mlflow_url, port=port)


def configure_dvc(root: Path, cfg: ServicesConfig, sec: S.Secrets) -> Path | None:
    """The DVC remote on the bucket; returns the credentials file it reads (None: no DVC here).

    The URL and endpoint go to the project's DVC config (every member needs them); the keys go
    to an owner-only credentials file outside the checkout, named only in ``.dvc/config.local``.
    """
    if not (root / ".dvc").is_dir():
        return None
    creds = sec.path.parent / "dvc-s3-credentials"
    _owner_only(
        creds,
        f"[default]\naws_access_key_id = {sec[S.S3_KEY_ID]}\n"
        f"aws_secret_access_key = {sec[S.S3_SECRET]}\n",
    )
    name = cfg.dvc.remote
    dvc = [sys.executable, "-m", "dvc"]
    steps = [
        ["remote", "add", "--force", *(["--default"] if cfg.dvc.default else []), name,
         f"s3://{cfg.s3.bucket}/{cfg.dvc.prefix}"],
        ["remote", "modify", name, "endpointurl", cfg.s3_endpoint],
        ["remote", "modify", name, "region", cfg.s3.region],
        ["remote", "modify", "--local", name, "credentialpath", str(creds)],
    ]  # fmt: skip
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for args in steps:
        out = subprocess.run([*dvc, *args], cwd=root, env=env, capture_output=True, text=True)
        if out.returncode:
            raise GanopsError(
                f"dvc {' '.join(args[:3])} failed: {(out.stdout + out.stderr)[-800:]}"
            )
    return creds


def team_up(
    root: Path, cfg: ServicesConfig, timeout: float = 180.0, echo: Callable[[str], None] = print
) -> tuple[dict[str, Service], list[str], S.Secrets]:
    """Start (or connect to) every team service; returns the services, those started now and
    the secrets."""
    required, generate = required_secrets(cfg)
    sec = S.load_secrets(create=True, required=required, generate=generate)
    running = Running(root)
    services, started, add = running.services, running.started, running.add

    superuser, su_pw = cfg.postgres.superuser, sec[S.PG_SUPERUSER]
    if cfg.postgres.start:
        data_dir = cfg.path(root, cfg.postgres.data_dir)
        if "postgres" in services:
            echo(f"postgres: already running (pid {services['postgres'].pid})")
        else:
            if pg.init_cluster(data_dir, superuser, su_pw):
                echo(f"postgres: initdb {data_dir}")
            echo(f"postgres: starting on {cfg.bind}:{cfg.postgres.port} ...")
            add(pg.start_server(root, data_dir, cfg.bind, cfg.postgres.port, superuser, su_pw,
                                timeout))  # fmt: skip
        admin_host = "127.0.0.1"
    else:
        admin_host = cfg.pg_host
    passwords = {name: sec[var] for name, var in S.PG_PASSWORDS.items()}
    created = pg.ensure_roles(admin_host, cfg.postgres.port, superuser, su_pw, passwords)
    if created:
        echo(f"postgres: created roles and databases {', '.join(created)}")

    key_id, secret = sec[S.S3_KEY_ID], sec[S.S3_SECRET]
    if cfg.s3.start:
        if "s3" in services:
            echo(f"s3: already running (pid {services['s3'].pid})")
        else:
            echo(f"s3: rclone serve s3 on {cfg.bind}:{cfg.s3.port} ...")
            add(s3mod.start_rclone(root, cfg.path(root, cfg.s3.directory), cfg.bind,
                                   cfg.s3.port, key_id, secret, timeout))  # fmt: skip
    if s3mod.ensure_bucket(cfg.s3_endpoint, key_id, secret, cfg.s3.bucket, cfg.s3.region):
        echo(f"s3: created bucket {cfg.s3.bucket}")

    # Prefect and MLflow need only the stores, not each other: started side by side, each is
    # recorded once it answers; the first failure is raised after both are settled.
    pending = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, start in (("prefect", start_prefect), ("mlflow", start_mlflow)):
            if name in services:
                echo(f"{name}: already running (pid {services[name].pid})")
            else:
                echo(f"{name}: starting on {cfg.bind}:{getattr(cfg, name).port} ...")
                pending[name] = pool.submit(start, root, cfg, sec, timeout)
    errors = []
    for future in pending.values():
        try:
            add(future.result())
        except GanopsError as e:
            errors.append(e)
    if errors:
        raise errors[0]
    creds = configure_dvc(root, cfg, sec)
    if creds:
        echo(f"dvc: remote {cfg.dvc.remote!r} = s3://{cfg.s3.bucket}/{cfg.dvc.prefix} "
             f"(keys in {creds})")  # fmt: skip
    save_state(root, services)
    deploy_pool(root, cfg, sec, timeout, echo)
    return services, started, sec


def deploy_pool(
    root: Path, cfg: ServicesConfig, sec: S.Secrets, timeout: float, echo: Callable[[str], None]
) -> None:
    """The ``gpu`` work pool and prefect.yaml's deployments on it, through the authenticated
    API (nothing to deploy without a prefect.yaml: a project that only uses the stores)."""
    from gan_models.services.prefect_setup import POOL, deploy, ensure_work_pool, read_deployments

    if not (root / "prefect.yaml").is_file():
        echo("prefect: no prefect.yaml in the project: no work pool or deployments")
        return
    read_deployments(root)  # a broken prefect.yaml is refused before the pool is created
    api, auth = f"{cfg.prefect_url}/api", prefect_auth(cfg, sec)
    if ensure_work_pool(api, POOL, auth):
        echo(f"work pool {POOL!r}: created (type process)")
    echo(f"deploying prefect.yaml on pool {POOL!r} ...")
    names = ", ".join(str(d) for d in deploy(root, api, POOL, max(timeout, 300), auth))
    echo(f"deployments of prefect.yaml on pool {POOL!r}: {names}")
    echo(f"hosts join the pool with: ganops worker --server {cfg.prefect_url}")
