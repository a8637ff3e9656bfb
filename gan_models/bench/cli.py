"""``ganops bench ...``: the benchmarks' commands (gan_models.cli mounts them on ``bench``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gan_models.errors import ConfigError


def _check_bench_train(
    family: str,
    image_size: int,
    batch_size: int,
    channels: int,
    steps: int,
    rounds: int,
    width: int,
    device: str,
    amp: str,
) -> None:
    """Refuse what ``bench_train`` cannot run, naming the option, before anything is built."""
    choices = {
        "--family": (family, ("vanilla", "dcgan")),  # the bare reference loop is written for these
        "--device": (device, ("auto", "cpu", "cuda", "mps")),
        "--amp": (amp, ("none", "bf16", "fp16")),
    }
    for opt, (value, allowed) in choices.items():
        if value not in allowed:
            why = " (the bare reference loop is written for them)" if opt == "--family" else ""
            raise ConfigError(f"{opt}: expected one of {list(allowed)}{why}, got {value!r}")
    counts = {
        "--batch-size": batch_size,
        "--channels": channels,
        "--steps": steps,
        "--rounds": rounds,
        "--width": width,
    }
    for opt, value in counts.items():
        if value < 1:
            raise ConfigError(f"{opt}: expected a positive number, got {value}")
    smallest = 8 if family == "dcgan" else 4
    if image_size < smallest or (family == "dcgan" and image_size & (image_size - 1)):
        shape = "a power of two >= 8" if family == "dcgan" else "at least 4"
        raise ConfigError(f"--image-size: {family} needs {shape}, got {image_size}")


def register_commands(app: typer.Typer) -> None:
    """Add ``eval``, ``train``, ``data`` and ``eval-data`` to the ``bench`` group ``app``."""

    @app.command("eval")
    def bench_eval_cmd(
        run_dir: Annotated[str, typer.Option(help="a trained run folder")] = "runs/demo",
        features_dir: Annotated[str | None, typer.Option(help="domain classifier folder")] = None,
        n_samples: Annotated[int, typer.Option(help="generated samples")] = 10000,
    ) -> None:
        """Evaluation throughput (generate + extract + metrics) against the forward work alone."""
        from gan_models.bench.eval import bench_eval

        if n_samples < 2:
            raise ConfigError(f"--n-samples: expected at least 2 samples, got {n_samples}")
        if not Path(run_dir).is_dir():
            raise ConfigError(
                f"--run-dir: {run_dir} is not a folder (expected a trained run folder)"
            )

        result = bench_eval(run_dir, features_dir, n_samples)
        typer.echo(
            f"evaluation {result['images_per_s']:.1f} img/s over {n_samples} samples "
            f"(forward work alone {result['forward_only_images_per_s']:.1f} img/s, ratio {result['ratio']:.3f})"
        )
        typer.echo(json.dumps(result))

    @app.command("train")
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
        profile: Annotated[
            str, typer.Option(help="trainer profile: exact, or fast (the bare loop stays fp32)")
        ] = "exact",
    ) -> None:
        """Trainer throughput against a bare PyTorch loop of the same model, same process."""
        from gan_models.bench.train import bench_train

        _check_bench_train(
            family, image_size, batch_size, channels, steps, rounds, width, device, amp
        )
        if profile not in ("exact", "fast"):
            raise ConfigError(f"--profile: expected exact or fast, got {profile!r}")

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
            profile=profile,
        )
        typer.echo(
            f"trainer ({profile}, {result['trainer_threads']} threads) "
            f"{result['images_per_s']:.1f} img/s, bare fp32 loop on the same threads "
            f"{result['bare_images_per_s']:.1f} img/s, ratio {result['ratio']:.3f}"
        )
        if "ratio_vs_all_threads" in result:
            typer.echo(
                f"bare fp32 loop on all {result['threads']} threads "
                f"{result['bare_all_threads_images_per_s']:.1f} img/s, trainer / that loop "
                f"{result['ratio_vs_all_threads']:.3f} (the exact profile computes on "
                f"{result['trainer_threads']} thread(s) so that its weights are the same on any "
                "core count; train.profile=fast uses every core)"
            )
        typer.echo(json.dumps(result))

    @app.command("data")
    def bench_data_cmd(
        sizes: Annotated[list[int] | None, typer.Option("--size", help="images per set")] = None,
        steps: Annotated[int, typer.Option(help="training steps per set")] = 200,
        width: Annotated[int, typer.Option(help="DCGAN width")] = 16,
        processed: Annotated[
            str | None, typer.Option(help="a processed split for streamed vs in-memory images/s")
        ] = "data/processed/mnist5k/train",
        workdir: Annotated[str | None, typer.Option(help="where the generated sets go")] = None,
    ) -> None:
        """Peak RSS training on generated 64x64 sets of each size; streaming vs in-memory speed."""
        from gan_models.bench.data import bench_data

        sizes = sizes or [10_000, 200_000]
        if min(sizes) < 64 or steps < 1:
            raise ConfigError(
                f"--size: at least 64 images per set, --steps >= 1 (got {sizes}, {steps})"
            )
        if processed and not Path(processed).is_dir():
            raise ConfigError(
                f"--processed: {processed} does not exist; run `ganops data preprocess`"
            )
        result = bench_data(tuple(sizes), steps, width=width, workdir=workdir, processed=processed)
        typer.echo(f"peak RSS {sizes[-1]} / {sizes[0]} images: ratio {result['rss_ratio']:.3f}")
        if processed:
            typer.echo(f"streamed / in-memory images/s: {result['streamed_over_memory']:.3f}")
        typer.echo(json.dumps(result))

    @app.command("eval-data")
    def bench_eval_data_cmd(
        sizes: Annotated[
            list[int] | None, typer.Option("--size", help="train images per set")
        ] = None,
        steps: Annotated[int, typer.Option(help="domain classifier training steps")] = 200,
        in_memory: Annotated[
            bool, typer.Option("--in-memory", help="also with the splits loaded whole (float32)")
        ] = False,
        workdir: Annotated[str | None, typer.Option(help="where the generated sets go")] = None,
    ) -> None:
        """Peak RSS of the features stage and of reference statistics on generated 64x64 sets."""
        from gan_models.bench.eval_data import bench_eval_data

        sizes = sizes or [10_000, 100_000]
        if min(sizes) < 64 or steps < 1:
            raise ConfigError(
                f"--size: at least 64 images per set, --steps >= 1 (got {sizes}, {steps})"
            )
        result = bench_eval_data(
            tuple(sizes),
            steps,
            in_memory=in_memory,
            workdir=workdir,
            log=lambda line: typer.echo(line, err=True),
        )
        big, small = max(sizes), min(sizes)
        for step in ("features", "reference"):
            typer.echo(
                f"{step}: peak RSS {big} / {small} images: ratio {result[step + '_ratio']:.3f}"
            )
        typer.echo(json.dumps(result))
