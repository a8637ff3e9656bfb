"""``ganops tune``: a thin command over :mod:`gan_models.tuning`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, get_args

import typer

from gan_models.errors import ConfigError


def register_bench_commands(bench_app: typer.Typer) -> None:
    """Add ``tune`` to ``bench_app`` (the root CLI mounts it as ``ganops bench tune``)."""

    @bench_app.command("tune")
    def bench_tune_cmd(
        params: Annotated[Path, typer.Argument(help="training params")] = Path("params/train.yaml"),
        tune_params: Annotated[Path, typer.Option("--tune-params")] = Path("params/tune.yaml"),
        trials: Annotated[int, typer.Option(help="trials per study")] = 8,
        steps: Annotated[int, typer.Option(help="training steps per trial")] = 600,
        fid_every: Annotated[int, typer.Option(help="steps between reported FIDs")] = 150,
        seed: Annotated[int, typer.Option(help="sampler seed (both studies)")] = 0,
        pruner: Annotated[
            list[str] | None,
            typer.Option(
                help="a pruned study's pruner (repeatable; each is compared with the one "
                "unpruned study): median, percentile, successive_halving or hyperband"
            ),
        ] = None,
        set_: Annotated[list[str] | None, typer.Option("--set")] = None,
    ) -> None:
        """Studies pruned against the same study unpruned: compute spent and best FID."""
        from gan_models.tuning.bench import bench_tune
        from gan_models.tuning.config import PrunerConfig

        check_tune_overrides(set_)
        for opt, value in (("--trials", trials), ("--steps", steps), ("--fid-every", fid_every)):
            if value < 1:
                raise ConfigError(f"{opt}: expected a positive number, got {value}")
        kinds = [k for k in get_args(PrunerConfig.model_fields["type"].annotation) if k != "none"]
        for kind in pruner or ():
            if kind not in kinds:
                raise ConfigError(f"--pruner: expected one of {kinds}, got {kind!r}")
        from gan_models.config import load_params
        from gan_models.training.params import TrainParams

        load_params(params, TrainParams, [o for o in set_ or [] if not o.startswith("tune.")])

        r = bench_tune(
            params,
            tune_params,
            trials=trials,
            steps=steps,
            fid_every=fid_every,
            seed=seed,
            pruners=pruner,
            overrides=set_,
            echo=typer.echo,
        )
        for label, x in [("unpruned", r["unpruned"]), *r["pruned"].items()]:
            lo, hi = x["best_fid_ci"]
            typer.echo(
                f"{label}: {x['steps_trained']} steps, {x['trial_seconds']:.0f} s in trials, "
                f"best trial {x['best_trial']} FID {x['best_fid']:.1f} [{lo:.1f}, {hi:.1f}]"
            )
        for label, x in r["pruned"].items():
            typer.echo(
                f"{label}/unpruned: steps {x['steps_ratio']:.3f}, seconds "
                f"{x['seconds_ratio']:.3f}; best within the unpruned CI: "
                f"{x['best_within_unpruned_ci']}"
            )
        typer.echo(json.dumps(r))


def register_commands(app: typer.Typer) -> None:
    """Add ``tune`` to ``app`` (the root CLI mounts it at the top level)."""

    @app.command("tune")
    def tune_cmd(
        params: Annotated[
            Path,
            typer.Argument(help="training params the trials start from, e.g. params/train.yaml"),
        ],
        tune_params: Annotated[
            Path, typer.Option("--tune-params", help="the study's params (section `tune`)")
        ] = Path("params/tune.yaml"),
        set_: Annotated[
            list[str] | None,
            typer.Option(
                "--set",
                help="override a param: tune.key=value (params/tune.yaml) or section.key=value "
                "(the training params); repeatable",
            ),
        ] = None,
        trials: Annotated[
            int | None, typer.Option(help="finished trials the study should reach (tune.trials)")
        ] = None,
        workers: Annotated[
            int | None, typer.Option(help="trials at once, one GPU each if any (tune.workers)")
        ] = None,
        pool: Annotated[
            str | None,
            typer.Option(help="Prefect work pool for the trials (tune.pool; needs a server)"),
        ] = None,
        study: Annotated[str | None, typer.Option(help="study name (tune.study)")] = None,
        storage: Annotated[str | None, typer.Option(help="Optuna RDB URL (tune.storage)")] = None,
        out: Annotated[Path, typer.Option("--out", help="where the best trial's params go")] = Path(
            "params/best.yaml"
        ),
        when_enabled: Annotated[
            bool,
            typer.Option(
                "--when-enabled",
                help="run the study only if tune.enabled is true; otherwise write --out as the "
                "training params unchanged (the DVC stage)",
            ),
        ] = False,
        dashboard: Annotated[
            bool, typer.Option("--dashboard", help="serve optuna-dashboard on the study's storage")
        ] = False,
        port: Annotated[int, typer.Option(help="optuna-dashboard port")] = 8080,
        track: Annotated[bool, typer.Option("--track/--no-track", help="log to MLflow")] = True,
        tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI")] = None,
        trial: Annotated[
            int | None, typer.Option(hidden=True, help="run this asked trial (a worker)")
        ] = None,
        parent_run: Annotated[str | None, typer.Option(hidden=True)] = None,
    ) -> None:
        """Hyperparameter search over GAN training (Optuna), pruned on FID, logged to MLflow."""
        from gan_models.tuning.controller import run_study
        from gan_models.tuning.inputs import load_tune, load_tuning
        from gan_models.tuning.report import write_untuned
        from gan_models.tuning.trial import run_trial

        check_tune_overrides(set_)
        tune_sets = [o for o in set_ or [] if o.split("=", 1)[0].startswith("tune.")]
        if when_enabled and not load_tune(Path(tune_params), tune_sets).enabled:
            # The space is not checked against a study that does not run: with tuning off, the
            # pipeline trains any family, whatever params/tune.yaml searches.
            from gan_models.config import load_params
            from gan_models.training.params import TrainParams

            train_sets = [o for o in set_ or [] if o not in tune_sets]
            write_untuned(out, params, load_params(params, TrainParams, train_sets))
            typer.echo(f"tuning is off (tune.enabled in {tune_params}); wrote {out} = {params}")
            return
        tuning = load_tuning(
            params,
            tune_params,
            set_,
            study=study,
            storage=storage,
            trials=trials,
            workers=workers,
            pool=pool,
            track=track,
            tracking_uri=tracking_uri,
        )
        if dashboard:
            _dashboard(tuning.storage_url, port)
            return
        if trial is not None:
            state = run_trial(tuning, trial, parent_run)
            typer.echo(f"trial {trial}: {state}")
            return
        report = run_study(tuning, out=out, echo=typer.echo)
        counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(report.counts().items()))
        typer.echo(
            f"study {report.study!r}: {counts}; {report.steps_trained} steps trained in "
            f"{report.seconds:.1f} s"
        )
        if report.best is None:
            raise ConfigError(f"study {report.study!r}: no trial completed; {out} not written")
        best = report.best
        typer.echo(f"best: trial {best['number']} {json.dumps(best['values'])}")
        typer.echo(f"      {json.dumps(best['params'])}")
        for row in report.pareto:
            typer.echo(f"pareto: trial {row['number']} {json.dumps(row['values'])}")
        typer.echo(f"wrote {out}")


def check_tune_overrides(overrides: list[str] | None) -> None:
    """A study's ``--set`` keys name ``tune`` or a training params section (ConfigError if not);
    what lies below them is checked when the study's inputs load."""
    from gan_models.config import check_override_keys
    from gan_models.training.params import TrainParams
    from gan_models.tuning.config import TuneParams

    sections = {k: f.annotation for k, f in TrainParams.model_fields.items()}
    check_override_keys(overrides, {"tune": TuneParams, **sections})


def _dashboard(storage_url: str, port: int) -> None:
    """optuna-dashboard's server in this process, on 127.0.0.1, until Ctrl-C."""
    from optuna_dashboard import run_server

    typer.echo(f"optuna-dashboard on http://127.0.0.1:{port} (Ctrl-C stops it)")
    with contextlib.suppress(KeyboardInterrupt):
        run_server(storage_url, host="127.0.0.1", port=port)
