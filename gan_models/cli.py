"""The ``ganops`` command line. Each command is a thin call into the library."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from gan_models.errors import GanopsError

app = typer.Typer(
    name="ganops",
    help="GAN experiments: data, training, evaluation, tracking, tuning and orchestration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# The command groups, mounted under their names by _mount_subapps.
bench_app = typer.Typer(
    help="Benchmarks that report ratios against a reference run.", no_args_is_help=True
)
features_app = typer.Typer(help="Feature extractors for the metrics.", no_args_is_help=True)
data_app = typer.Typer(help="Fetch, validate and preprocess datasets.", no_args_is_help=True)
GROUPS = {"bench": bench_app, "features": features_app, "data": data_app}

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a param: section.key=value (repeatable)"),
]


def _mount_subapps() -> None:
    """The commands other modules define, all mounted one way, then the groups.

    Each module has a ``register_commands(typer_app)`` that adds its commands to the app it is
    given; which app (the top level or a group) is decided here alone.
    """
    from gan_models.augment import cli as augment_cli
    from gan_models.bench import cli as bench_cli
    from gan_models.data import cli as data_cli
    from gan_models.data import stage_cli
    from gan_models.explore import cli as explore_cli
    from gan_models.services import cli as services_cli
    from gan_models.tracking import cli as tracking_cli
    from gan_models.tuning import cli as tuning_cli

    for register, target in (
        (tracking_cli.register_commands, app),  # register, promote, mlflow-sync
        (services_cli.register_commands, app),  # up, down, status, env, worker
        (explore_cli.register_commands, app),  # explore
        (tuning_cli.register_commands, app),  # tune
        (augment_cli.register_commands, app),  # augment
        (bench_cli.register_commands, bench_app),  # bench eval, train, data, eval-data
        (tuning_cli.register_bench_commands, bench_app),  # bench tune
        (data_cli.register_commands, data_app),  # data fetch, data sources
        (stage_cli.register_commands, data_app),  # data validate, data preprocess
    ):
        register(target)
    for name, group in GROUPS.items():
        app.add_typer(group, name=name)


@app.command("train")
def train_cmd(
    params: Annotated[
        Path, typer.Argument(help="params YAML, e.g. params/dcgan-mnist5k-small.yaml")
    ],
    set_: SetOpt = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="run folder (default runs/NAME-TIMESTAMP)")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue from the newest checkpoint")
    ] = False,
    auto_resume: Annotated[
        bool,
        typer.Option(
            "--auto-resume",
            help="resume an unfinished run with the same params, else start over in --run-dir",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the resolved config and exit")
    ] = False,
    track: Annotated[
        bool, typer.Option("--track/--no-track", help="log the run to MLflow (default: on)")
    ] = True,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or ./mlflow.db)"),
    ] = None,
    nproc_per_node: Annotated[
        int | None,
        typer.Option(help="data-parallel: processes on this host (one per GPU; torchrun)"),
    ] = None,
    nnodes: Annotated[int, typer.Option(help="data-parallel: number of hosts")] = 1,
    node_rank: Annotated[int, typer.Option(help="data-parallel: this host's index")] = 0,
    master_addr: Annotated[
        str | None, typer.Option(help="data-parallel: address of host 0 (--nnodes > 1)")
    ] = None,
    master_port: Annotated[int, typer.Option(help="data-parallel: port on host 0")] = 29500,
) -> None:
    """Train a GAN family as a params file describes (tracked in MLflow unless --no-track).

    With --nproc-per-node N (and --nnodes/--node-rank/--master-addr for several hosts) it runs
    N data-parallel ranks under torchrun: train.batch_size is the global batch.
    """
    from gan_models.config import dump_yaml, load_params
    from gan_models.training.distributed import env_world
    from gan_models.training.params import TrainParams

    p = load_params(params, TrainParams, set_)
    if dry_run:
        typer.echo(dump_yaml(p), nl=False)
        return
    if run_dir is None:
        if resume or auto_resume:
            raise GanopsError("--resume needs --run-dir: the run folder to continue")
        run_dir = Path("runs") / f"{p.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    how = "auto" if auto_resume else resume
    if nproc_per_node is not None or nnodes != 1:
        from gan_models.training.launch import Launch, check_launch, run_ranks, worker_args

        nproc = 1 if nproc_per_node is None else nproc_per_node
        launch = Launch(nproc, nnodes, node_rank, master_addr, master_port)
        check_launch(launch, p, run_dir, how)
        args = worker_args(params, run_dir, set_ or [], how, track, tracking_uri)
        raise typer.Exit(run_ranks(launch, args))
    if track and env_world().is_main:  # in a data-parallel run, rank 0 alone tracks
        from gan_models.tracking import tracked_train

        result = tracked_train(p, run_dir, resume=how, tracking_uri=tracking_uri)
    else:
        from gan_models.training import train

        result = train(p, run_dir, resume=how)
    if not env_world().is_main:
        return
    losses = ", ".join(
        f"{k}={v:.4f}" for k, v in result.final_losses.items() if k.endswith("/loss")
    )
    typer.echo(
        f"trained {p.model.family} for {result.steps} steps in {result.seconds:.1f} s ({losses})"
    )
    typer.echo(f"run folder: {result.run_dir}")


@app.command("sample")
def sample_cmd(
    source: Annotated[str, typer.Argument(help="a run folder or models:/NAME@ALIAS (or /VERSION)")],
    n: Annotated[int, typer.Option("-n", help="number of images")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="latent seed")] = 0,
    out: Annotated[
        Path, typer.Option("-o", "--out", help="FILE.png (grid) or FILE.npy (raw)")
    ] = Path("samples.png"),
    no_ema: Annotated[
        bool, typer.Option("--no-ema", help="use the raw generator, not its EMA")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto")] = "cpu",
    truncation: Annotated[
        float | None, typer.Option(help="StyleGAN truncation psi (1 = none, 0 = the mean style)")
    ] = None,
    mix_seed: Annotated[
        int | None, typer.Option(help="StyleGAN style mixing: the second seed's latents")
    ] = None,
    crossover: Annotated[
        int | None, typer.Option(help="StyleGAN style layer where --mix-seed's styles take over")
    ] = None,
) -> None:
    """Generate N images from a trained run or a registered model with a fixed seed."""
    from gan_models.sampling import RunGenerator, write_samples

    if n < 1:
        raise GanopsError(f"-n: expected a positive number of images, got {n}")
    if source.startswith("models:/"):
        if no_ema:
            raise GanopsError("--no-ema: a registered model holds only the EMA generator")
        from gan_models.tracking import load_registered_generator

        gen = load_registered_generator(source, device=device)
    else:
        gen = RunGenerator.from_run_dir(source, device=device, use_ema=not no_ema)
    if truncation is None and mix_seed is None and crossover is None:
        images, _ = gen.generate(n, seed)
    else:
        psi = 1.0 if truncation is None else truncation
        images = gen.generate_styled(n, seed, psi=psi, mix_seed=mix_seed, crossover=crossover)
    path = write_samples(images, out, inputs=gen.inputs(n, seed))
    typer.echo(f"wrote {n} samples ({tuple(images.shape[1:])}) to {path}")


@app.command("summary")
def summary_cmd(
    run_dir: Annotated[Path, typer.Argument(help="an evaluated run folder")] = Path("runs/train"),
) -> None:
    """Print a run's metrics, where its figures and reports are, and how to open the UIs."""
    from gan_models.metrics.evaluate import METRICS_FILE
    from gan_models.metrics.report import format_metrics_table

    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise GanopsError(f"{path} not found; evaluate the run first (`ganops evaluate {run_dir}`)")
    result = json.loads(path.read_text())
    typer.echo(format_metrics_table(result))
    if result.get("fid", {}).get("untrained") is not None:
        typer.echo(f"untrained generator FID: {result['fid']['untrained']:.4f}")
    dataset = result.get("run", {}).get("dataset", "DATASET")
    typer.echo(
        "\n".join(
            [
                f"samples:       {run_dir / 'samples.png'} (and {run_dir / 'samples'}/ over time)",
                f"figures:       {run_dir / 'interpolation.png'}, {run_dir / 'nearest_neighbours.png'}",
                f"validation:    reports/validation/{dataset}/index.html",
                "curves:        dvc plots show  (writes dvc_plots/index.html)",
                "metrics:       dvc metrics show; dvc exp show",
                "UIs:           ganops up  (MLflow on http://127.0.0.1:5000, Prefect on http://127.0.0.1:4200)",
            ]
        )
    )


@app.command("families")
def families_cmd(
    params_dir: Annotated[
        Path, typer.Option("--params-dir", help="where the presets (PARAMS files) live")
    ] = Path("params"),
) -> None:
    """List every GAN family with the data it needs, its own options and its presets."""
    from gan_models.config import TrainConfig
    from gan_models.families import FAMILIES
    from gan_models.training.params import find_presets

    presets = find_presets(params_dir)
    for f in FAMILIES.values():
        needs = {"images": "images", "paired": "paired images", "unpaired": "two image domains"}[
            f.batch_kind
        ]
        if f.conditional:
            needs += " with labels"
        typer.echo(f"{f.name:10s} {f.description}\n{'':10s} data: {needs}; paper: {f.paper}")
        for section, options in f.options.items():
            for key, field in options.model_fields.items():
                typer.echo(
                    f"{'':10s} option: {section}.{key} = {field.default!r}: {field.description}"
                )
        for path, p in presets.get(f.name, []):
            t = p.train
            amp = f", {t.amp} autocast" if t.amp != "none" else ""
            typer.echo(
                f"{'':10s} preset: {path} ({p.data.path}, {p.data.image_size}px, "
                f"{t.steps} steps x {t.batch_size}{amp})"
            )
    # The trainer's options every family takes (indented: each unindented line is a family).
    for key in ("augment", "augment_p"):
        field = TrainConfig.model_fields[key]
        default = field.get_default(call_default_factory=True)
        typer.echo(f"{'':10s} every family: train.{key} = {default!r}: {field.description}")


@features_app.command("train")
def features_train_cmd(
    name: Annotated[str, typer.Argument(help="processed dataset name (data/processed/NAME)")],
    params: Annotated[Path, typer.Option(help="params file with a features: section")] = Path(
        "params/features.yaml"
    ),
    set_: SetOpt = None,
    processed_root: Annotated[Path, typer.Option(help="where processed datasets live")] = Path(
        "data/processed"
    ),
    out: Annotated[
        Path | None, typer.Option(help="output folder (default models/features/NAME)")
    ] = None,
) -> None:
    """Train the domain classifier whose features and softmax the metrics use."""
    from gan_models.metrics.config import load_features_params
    from gan_models.metrics.extractors import train_features

    card = train_features(processed_root / name, load_features_params(params, set_), out)
    typer.echo(
        f"domain classifier for {name}: test accuracy {card['test_accuracy']:.4f} "
        f"({card['data']['n_test']} images), sha256 {card['sha256'][:12]}, trained in "
        f"{card['seconds']:.1f} s -> {out or 'models/features/' + name}"
    )


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a training run folder")],
    n_samples: Annotated[int | None, typer.Option("--n-samples", help="generated samples")] = None,
    extractor: Annotated[
        str | None, typer.Option(help="domain (trained classifier) or inception (FID-standard)")
    ] = None,
    inception_weights: Annotated[
        Path | None,
        typer.Option(help="pt_inception-2015-12-05-6726825d.pth, for --extractor inception"),
    ] = None,
    features_dir: Annotated[
        Path | None, typer.Option(help="domain classifier folder (default models/features/DATASET)")
    ] = None,
    params: Annotated[Path, typer.Option(help="params file with an evaluate: section")] = Path(
        "params/evaluate.yaml"
    ),
    features_params: Annotated[
        Path, typer.Option(help="params file with a features: section")
    ] = Path("params/features.yaml"),
    set_: SetOpt = None,
) -> None:
    """Score a run: FID (with CI and the real-vs-real floor), KID, IS, PR, DC, CAS, memorization."""
    from gan_models.config import check_override_keys
    from gan_models.evaluation import evaluate_run
    from gan_models.metrics.config import (
        EvaluateParams,
        FeaturesParams,
        load_evaluate_params,
        load_features_params,
    )
    from gan_models.metrics.report import format_metrics_table

    # Both sections are checked before either loads: a mistyped section is an error, not skipped.
    check_override_keys(set_, {"evaluate": EvaluateParams, "features": FeaturesParams})
    overrides = list(set_ or [])
    if n_samples is not None:
        overrides.append(f"evaluate.n_samples={n_samples}")
    if extractor is not None:
        overrides.append(f"features.extractor={extractor}")
    if inception_weights is not None:
        overrides.append(f"features.inception.weights={inception_weights}")

    def of(section: str) -> list[str]:
        return [o for o in overrides if o.partition("=")[0].split(".")[0] == section]

    feats = load_features_params(features_params, of("features"))
    ev = load_evaluate_params(params, of("evaluate"))
    result = evaluate_run(run_dir, features=feats, evaluate=ev, features_dir=features_dir)
    if (run_dir / "mlflow_run.json").is_file():  # a tracked run: attach the evaluation to it
        from gan_models.tracking import log_evaluation

        log_evaluation(run_dir, result)
    typer.echo(format_metrics_table(result))
    untrained = result["fid"].get("untrained")
    if untrained is not None:
        typer.echo(
            f"FID of the untrained generator (same architecture, seeded init): {untrained:.4f}"
        )
    typer.echo(
        f"wrote {run_dir / 'metrics.json'} and figures (samples, interpolation, nearest_neighbours)"
    )


_mount_subapps()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors print one clear line and exit non-zero, no traceback.

    Usage errors (no such command or option, a missing argument, a bad value) print the short
    usage and exit 2; ``ganops`` or a command group alone prints its help (exit 2, as Click does).
    Typer raises its own exception classes (vendored Click), all ``typer.TyperException``.
    """
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="ganops")
    except GanopsError as e:
        typer.echo(f"error: {e}", err=True)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.TyperException as e:  # UsageError, BadParameter, NoArgsIsHelpError, ...
        show = getattr(e, "show", None)
        if show is not None:
            show()
        else:
            typer.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    # Without standalone mode Typer returns the exit code of ``typer.Exit`` (e.g. --help: 0).
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
