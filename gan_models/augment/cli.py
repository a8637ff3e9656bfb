"""``ganops augment``: a thin command over :mod:`gan_models.augment`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register_commands(app: typer.Typer) -> None:
    """Add ``augment`` to ``app`` (the root CLI mounts it at the top level)."""

    @app.command("augment")
    def augment_cmd(
        params: Annotated[
            Path, typer.Argument(help="the experiment's params (section `augment`)")
        ] = Path("params/augment.yaml"),
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="override a param: augment.key=value (repeatable)"),
        ] = None,
        arm: Annotated[
            list[str] | None,
            typer.Option("--arm", help="run only these arms (repeatable; real is always run)"),
        ] = None,
        tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
        check: Annotated[
            bool, typer.Option("--check", help="check the params and data, train nothing")
        ] = False,
    ) -> None:
        """Does synthetic data help a classifier? Real vs classical vs GAN augmentation, k-shot."""
        from gan_models.augment.config import load_augment_params, select_arms
        from gan_models.augment.experiment import check_inputs, run_experiment

        p = select_arms(load_augment_params(params, set_), arm)
        if check:
            check_inputs(p)
            names = ", ".join(a.name for a in p.expanded_arms())
            typer.echo(f"{params}: k={p.k}, {p.seeds} seeds, arms: {names}")
            return
        run_experiment(p, tracking_uri=tracking_uri, echo=typer.echo)
