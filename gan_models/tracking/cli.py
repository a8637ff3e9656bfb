"""``ganops register``, ``ganops promote`` and ``ganops mlflow-sync``: thin commands over
:mod:`gan_models.tracking`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from gan_models.errors import GanopsError

UriOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI (default: the run's, $MLFLOW_TRACKING_URI or ./mlflow.db)",
    ),
]


@contextlib.contextmanager
def _mlflow_errors() -> Iterator[None]:
    """MLflow's errors (bad names, server-side refusals) as one clear line, not a traceback."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        raise GanopsError(f"MLflow: {e.message}") from None


def register_commands(app: typer.Typer) -> None:
    """Add ``register``, ``promote`` and ``mlflow-sync`` to ``app`` (gan_models.cli mounts them
    at the top level)."""

    @app.command("register")
    def register_cmd(
        run_dir: Annotated[Path, typer.Argument(help="a finished, evaluated run folder")],
        name: Annotated[
            str | None, typer.Option("--name", help="registered model name (default FAMILY-DATA)")
        ] = None,
        metrics: Annotated[
            Path | None,
            typer.Option("--metrics", help="metrics.json (default: found in the run folder)"),
        ] = None,
        tracking_uri: UriOpt = None,
        then_promote: Annotated[
            bool, typer.Option("--promote", help="run the promotion gate right after")
        ] = False,
        params: Annotated[
            Path, typer.Option("--params", help="params file with the register: section")
        ] = Path("params/register.yaml"),
        record: Annotated[
            Path | None,
            typer.Option("--record", help="write the version (and decision) to this JSON file"),
        ] = None,
    ) -> None:
        """Register a run's generator as a new model version and alias it 'challenger'."""
        from gan_models.tracking.gate import CHALLENGER, load_register_params
        from gan_models.tracking.promotion import promote
        from gan_models.tracking.registry import register_run
        from gan_models.utils.io import write_json_atomic

        gate = load_register_params(params) if then_promote else None
        with _mlflow_errors():
            mv = register_run(
                run_dir, model_name=name, metrics_path=metrics, tracking_uri=tracking_uri
            )
        typer.echo(
            f"registered {mv.name} version {mv.version} (@{CHALLENGER}): FID {mv.tags.get('fid')} "
            f"[{mv.tags.get('fid_ci_low')}, {mv.tags.get('fid_ci_high')}], precision "
            f"{mv.tags.get('precision')}, recall {mv.tags.get('recall')}"
        )
        typer.echo(f"model URI: models:/{mv.name}/{mv.version}")
        out = {"model": mv.name, "version": str(mv.version), "run_id": mv.run_id}
        if gate is not None:
            with _mlflow_errors():
                decision = promote(
                    mv.name, version=mv.version, params=gate, tracking_uri=tracking_uri
                )
            typer.echo(str(decision))
            out.update(
                decision=decision.decision, reason=decision.reason, champion=decision.champion
            )
        if record is not None:
            write_json_atomic(record, out)

    @app.command("promote")
    def promote_cmd(
        model: Annotated[str, typer.Argument(help="registered model name, e.g. dcgan-mnist5k")],
        version: Annotated[
            int | None, typer.Option("--version", help="version to promote (default: challenger)")
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="promote even if the gate refuses (recorded)")
        ] = False,
        params: Annotated[
            Path, typer.Option("--params", help="params file with the register: section")
        ] = Path("params/register.yaml"),
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="override, e.g. register.pr_tolerance=0.05"),
        ] = None,
        tracking_uri: UriOpt = None,
    ) -> None:
        """Make the challenger the champion if it is better (FID CI, precision, recall)."""
        from gan_models.tracking.gate import load_register_params
        from gan_models.tracking.promotion import promote

        if version is not None and version < 1:
            raise GanopsError(f"--version: expected a version number >= 1, got {version}")
        p = load_register_params(params, set_)
        decision = promote(model, version=version, force=force, params=p, tracking_uri=tracking_uri)
        typer.echo(str(decision))

    @app.command("mlflow-sync")
    def mlflow_sync_cmd(
        run_dir: Annotated[Path, typer.Argument(help="a tracked run folder")],
        tracking_uri: UriOpt = None,
    ) -> None:
        """Send to MLflow what a tracked run could not log (RUN_DIR/mlflow_pending.jsonl)."""
        from gan_models.tracking.outbox import sync_pending

        with _mlflow_errors():
            n, what = sync_pending(run_dir, tracking_uri=tracking_uri)
        if n == 0:
            typer.echo(f"{run_dir}: nothing pending; the MLflow run has everything")
        else:
            typer.echo(f"sent {what} to the MLflow run of {run_dir}")
