"""``ganops up``, ``ganops down`` and ``ganops status``: thin commands over :mod:`gan_models.services`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ServicesOpt = Annotated[
    Path | None,
    typer.Option(
        "--services", help="the services file of team mode (default: params/services.yaml)"
    ),
]
RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="the ganops checkout (default: found upward from the cwd)"),
]


def register_commands(app: typer.Typer) -> None:
    """Add ``up``, ``down`` and ``status`` to ``app`` (gan_models.cli mounts them at the top level)."""

    @app.command("up")
    def up_cmd(
        no_prefect: Annotated[
            bool, typer.Option("--no-prefect", help="no Prefect server (use $PREFECT_API_URL)")
        ] = False,
        no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="no MLflow server")] = False,
        no_worker: Annotated[bool, typer.Option("--no-worker", help="no local worker")] = False,
        prefect_port: Annotated[int, typer.Option(help="Prefect API/UI port")] = 4200,
        mlflow_port: Annotated[int, typer.Option(help="MLflow server port")] = 5000,
        pool: Annotated[
            str, typer.Option(help="work pool of every deployment of prefect.yaml and the worker")
        ] = "gpu",
        limit: Annotated[
            int | None,
            typer.Option(help="concurrent flow runs of the worker (default: GPUs, or 1)"),
        ] = None,
        timeout: Annotated[float, typer.Option(help="seconds to wait for each service")] = 180,
        team: Annotated[
            bool,
            typer.Option(
                "--team", help="team mode: the services of params/services.yaml (docs/team.md)"
            ),
        ] = False,
        services: ServicesOpt = None,
        root: RootOpt = None,
    ) -> None:
        """Start the Prefect server, MLflow server, work pool, deployments and a local worker.

        With --team (or --services FILE): PostgreSQL, an S3 endpoint, and the Prefect and MLflow
        servers on them, each behind credentials (see docs/team.md)."""
        if team or services is not None:
            _team_up(root, services, timeout)
            return
        from gan_models.services import up

        result = up(
            root,
            prefect=not no_prefect,
            mlflow=not no_mlflow,
            worker=not no_worker,
            prefect_port=prefect_port,
            mlflow_port=mlflow_port,
            pool=pool,
            limit=limit,
            timeout=timeout,
            echo=typer.echo,
        )
        s = result.services
        if "prefect" in s:
            typer.echo(f"Prefect UI:  {s['prefect'].url}")
        if "mlflow" in s:
            typer.echo(f"MLflow UI:   {s['mlflow'].url}")
        if result.deployments:
            names = ", ".join(str(d) for d in result.deployments)
            typer.echo(f"deployments of prefect.yaml on pool {result.pool!r}: {names}")
        if result.env:
            typer.echo("export these to use them from this shell:")
            for k, v in result.env.items():
                typer.echo(f"  export {k}={v}")
        typer.echo("stop with: ganops down")

    @app.command("down")
    def down_cmd(root: RootOpt = None) -> None:
        """Stop the services `ganops up` started (only those processes)."""
        from gan_models.services import down

        if not down(root, echo=typer.echo):
            typer.echo("nothing to stop")

    @app.command("status")
    def status_cmd(root: RootOpt = None) -> None:
        """What `ganops up` started: running or not, answering or not, where."""
        from gan_models.services import status

        rows = status(root)
        if not rows:
            typer.echo("no services recorded; start them with `ganops up`")
            return
        for r in rows:
            state = "running" if r.running else "stopped"
            if r.running:
                state += ", answering" if r.answering else ", not answering"
            typer.echo(f"{r.name:8s} pid {r.pid:<7d} {state:22s} {r.url or '':24s} log {r.log}")

    @app.command("env")
    def env_cmd(services: ServicesOpt = None, root: RootOpt = None) -> None:
        """Print the environment a user or worker exports to use the team services.

        `eval "$(ganops env)"`; it holds credentials (from the secrets file), so keep it out of
        logs and shared files."""
        import shlex

        from gan_models.services.secrets import load_secrets
        from gan_models.services.team import client_env, required_secrets

        cfg = _team_config(root, services)
        required, _ = required_secrets(cfg)
        for k, v in client_env(cfg, load_secrets(required=required)).items():
            typer.echo(f"export {k}={shlex.quote(v)}")

    @app.command("worker")
    def worker_cmd(
        server: Annotated[
            str | None,
            typer.Option(
                "--server", help="the Prefect server, http://HOST:PORT (default: $PREFECT_API_URL)"
            ),
        ] = None,
        slots: Annotated[
            int | None,
            typer.Option(help="flow runs at once (default: one per GPU, 1 without GPUs)"),
        ] = None,
        pull: Annotated[
            list[str] | None,
            typer.Option("--pull", help="dvc pull this target first (repeatable)"),
        ] = None,
        pool: Annotated[str, typer.Option(help="the work pool to serve")] = "gpu",
        services: ServicesOpt = None,
        root: RootOpt = None,
    ) -> None:
        """Make this host a worker of the team's work pool (docs/team.md, "A GPU host joins").

        Reads the team's client environment (the environment, e.g. the output of `ganops env`
        on the services host, else the secrets file), checks that the Prefect API accepts it,
        pulls the DVC targets given, then runs a Prefect worker with one slot per GPU."""
        import os
        import sys

        from gan_models.errors import ConfigError
        from gan_models.services import worker as W
        from gan_models.utils.paths import project_root

        where = project_root(root)
        env = W.client_environment(where, services)
        if server is not None:
            env["PREFECT_API_URL"] = W.api_url(server)
        missing = [k for k in W.REQUIRED if not env.get(k)]
        if missing:
            raise ConfigError(f"{', '.join(missing)}: not set; export what `ganops env` prints "
                              "on the services host (or pass --server)")  # fmt: skip
        n = W.slots_for(slots, gpus := W.gpu_count())
        W.check_access(env, pool)
        if pull:
            typer.echo(f"dvc pull {' '.join(pull)} ...")
            W.dvc_pull(where, pull, env)
        cmd, name = W.worker_command(where, pool, n)
        gpus_text = f"{gpus} GPU(s)" if gpus else "no GPU"
        typer.echo(f"worker {name}: pool {pool!r} at {env['PREFECT_API_URL']}, {n} slot(s) "
                   f"({gpus_text})")  # fmt: skip
        sys.stdout.flush()
        # Replaced by the worker itself: signals (Ctrl-C, a service manager's stop) reach it.
        os.execve(cmd[0], cmd, W.worker_process_env(where, env, gpus))


def _team_config(root: Path | None, services: Path | None):
    from gan_models.errors import ConfigError
    from gan_models.services.team_config import DEFAULT_FILE, load_services_config
    from gan_models.utils.paths import project_root

    path = services if services is not None else project_root(root) / DEFAULT_FILE
    cfg = load_services_config(path)
    if cfg.mode != "team":
        raise ConfigError(f"{path}: mode: expected team for team services, got {cfg.mode!r} "
                          "(plain `ganops up` starts the local ones)")  # fmt: skip
    return cfg


def _team_up(root: Path | None, services: Path | None, timeout: float) -> None:
    from gan_models.services.team import team_up
    from gan_models.utils.paths import project_root

    cfg = _team_config(root, services)
    found, _, sec = team_up(project_root(root), cfg, timeout=timeout, echo=typer.echo)
    typer.echo(f"Prefect UI:  {cfg.prefect_url}  (user {cfg.prefect.username})")
    typer.echo(f"MLflow UI:   {cfg.mlflow_url}  (user {cfg.mlflow.admin_username})")
    typer.echo(f"S3:          {cfg.s3_endpoint}  bucket {cfg.s3.bucket}")
    typer.echo(f"credentials: {sec.path} (owner-only)")
    typer.echo('clients: eval "$(ganops env)"; stop with: ganops down')
