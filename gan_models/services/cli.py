"""``ganops up``, ``ganops down`` and ``ganops status``: thin commands over :mod:`gan_models.services`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
        root: RootOpt = None,
    ) -> None:
        """Start the Prefect server, MLflow server, work pool, deployments and a local worker."""
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
