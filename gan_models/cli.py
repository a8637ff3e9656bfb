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
bench_app = typer.Typer(
    help="Benchmarks that report ratios against a reference run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a param: section.key=value (repeatable)"),
]


def _mount_subapps() -> None:
    from gan_models.data.cli import app as data_app

    app.add_typer(data_app, name="data", help="Fetch, validate and preprocess datasets.")


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
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the resolved config and exit")
    ] = False,
) -> None:
    """Train a GAN family as a params file describes."""
    from gan_models.config import TrainParams, dump_yaml, load_params
    from gan_models.training import train

    p = load_params(params, TrainParams, set_)
    if dry_run:
        typer.echo(dump_yaml(p), nl=False)
        return
    if run_dir is None:
        if resume:
            raise GanopsError("--resume needs --run-dir: the run folder to continue")
        run_dir = Path("runs") / f"{p.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = train(p, run_dir, resume=resume)
    losses = ", ".join(
        f"{k}={v:.4f}" for k, v in result.final_losses.items() if k.endswith("/loss")
    )
    typer.echo(
        f"trained {p.model.family} for {result.steps} steps in {result.seconds:.1f} s ({losses})"
    )
    typer.echo(f"run folder: {result.run_dir}")


@app.command("sample")
def sample_cmd(
    source: Annotated[str, typer.Argument(help="a run folder")],
    n: Annotated[int, typer.Option("-n", help="number of images")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="latent seed")] = 0,
    out: Annotated[
        Path, typer.Option("-o", "--out", help="FILE.png (grid) or FILE.npy (raw)")
    ] = Path("samples.png"),
    no_ema: Annotated[
        bool, typer.Option("--no-ema", help="use the raw generator, not its EMA")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto")] = "cpu",
) -> None:
    """Generate N images from a trained run with a fixed seed."""
    from gan_models.sampling import RunGenerator, write_samples

    if n < 1:
        raise GanopsError(f"-n: expected a positive number of images, got {n}")
    gen = RunGenerator.from_run_dir(source, device=device, use_ema=not no_ema)
    images, _ = gen.generate(n, seed)
    path = write_samples(images, out)
    typer.echo(f"wrote {n} samples ({tuple(images.shape[1:])}) to {path}")


@app.command("families")
def families_cmd() -> None:
    """List every GAN family with the data it needs."""
    from gan_models.families import FAMILIES

    for f in FAMILIES.values():
        needs = {"images": "images", "paired": "paired images", "unpaired": "two image domains"}[
            f.batch_kind
        ]
        if f.conditional:
            needs += " with labels"
        typer.echo(f"{f.name:10s} {f.description}\n{'':10s} data: {needs}; paper: {f.paper}")


@bench_app.command("train")
def bench_train_cmd(
    family: Annotated[str, typer.Option(help="vanilla or dcgan")] = "dcgan",
    image_size: Annotated[int, typer.Option(help="square image side")] = 64,
    batch_size: Annotated[int, typer.Option(help="batch size")] = 64,
    channels: Annotated[int, typer.Option(help="image channels")] = 3,
    steps: Annotated[int, typer.Option(help="timed steps per round")] = 50,
    rounds: Annotated[int, typer.Option(help="alternating trainer/bare rounds")] = 3,
    width: Annotated[int, typer.Option(help="network width")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps")] = "auto",
    amp: Annotated[str, typer.Option(help="none, bf16 or fp16")] = "none",
) -> None:
    """Trainer throughput against a bare PyTorch loop of the same model, same process."""
    from gan_models.bench import bench_train

    result = bench_train(
        family=family,
        image_size=image_size,
        batch_size=batch_size,
        channels=channels,
        steps=steps,
        rounds=rounds,
        width=width,
        device=device,
        amp=amp,
    )
    typer.echo(
        f"trainer {result['images_per_s']:.1f} img/s, bare loop {result['bare_images_per_s']:.1f} "
        f"img/s, ratio {result['ratio']:.3f}"
    )
    typer.echo(json.dumps(result))


_mount_subapps()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors print one clear line and exit non-zero, no traceback."""
    import click

    try:
        app(args=argv, standalone_mode=False, prog_name="ganops")
    except GanopsError as e:
        typer.echo(f"error: {e}", err=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort:
        typer.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
