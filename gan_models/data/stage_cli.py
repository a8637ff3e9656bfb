"""``validate`` and ``preprocess`` commands; the root CLI mounts them under ``ganops data``."""

from __future__ import annotations

from pathlib import Path

import typer

from gan_models.config import load_section
from gan_models.errors import DataError

PARAMS_DEFAULT = Path("params/data.yaml")


def _section_overrides(section: str, overrides: list[str] | None) -> list[str]:
    """``--set min_count=5`` and ``--set validate.min_count=5`` both address ``section``; a
    dotted key of another section (``--set preprocess.x=1`` on validate) stays as it is, so
    that loading refuses it as a section this command does not read."""
    out = []
    for o in overrides or []:
        key = o.partition("=")[0].strip()
        out.append(o if "." in key or key == section else f"{section}.{o}")
    return out


def validate_command(
    name: str = typer.Argument(..., help="dataset name: the folder under --raw-root"),
    params: Path = typer.Option(PARAMS_DEFAULT, "--params", help="params file"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="override, e.g. --set validate.min_count=500 (repeatable)"
    ),
    raw_root: Path = typer.Option(Path("data/raw"), "--raw-root", help="where datasets live"),
    report_dir: Path | None = typer.Option(
        None, "--report-dir", help="data docs folder [default: reports/validation/NAME]"
    ),
) -> None:
    """Check a dataset against the expectation suite; write HTML data docs; fail on any breach."""
    from gan_models.data.gx_suite import ValidateParams
    from gan_models.data.validate import validate_dataset

    p = load_section(params, "validate", ValidateParams, _section_overrides("validate", set_))
    report = report_dir if report_dir is not None else Path("reports/validation") / name
    result = validate_dataset(raw_root / name, p, report_dir=report)
    if not result.success:
        raise DataError(result.summary())
    typer.echo(result.summary())


def preprocess_command(
    name: str = typer.Argument(..., help="dataset name: the folder under --raw-root"),
    params: Path = typer.Option(PARAMS_DEFAULT, "--params", help="params file"),
    set_: list[str] | None = typer.Option(
        None, "--set", help="override, e.g. --set preprocess.image_size=64 (repeatable)"
    ),
    raw_root: Path = typer.Option(Path("data/raw"), "--raw-root", help="where datasets live"),
    out_root: Path = typer.Option(
        Path("data/processed"), "--out-root", help="where processed datasets go"
    ),
) -> None:
    """Scale, resize and split a raw dataset into OUT_ROOT/NAME/{train,val,test}/."""
    from gan_models.data.preprocess import PreprocessParams, preprocess_dataset
    from gan_models.data.stream import fixed_mmap_threshold

    p = load_section(params, "preprocess", PreprocessParams, _section_overrides("preprocess", set_))
    fixed_mmap_threshold()  # flat peak memory over many chunks (this command's own process)
    manifest = preprocess_dataset(raw_root / name, out_root / name, p)
    counts = ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items())
    shape = "x".join(map(str, manifest["image_shape"]))
    typer.echo(f"preprocess {name}: {counts} images of {shape} uint8 -> {out_root / name}")


def register_commands(app: typer.Typer) -> None:
    """Add ``validate`` and ``preprocess`` to ``app``."""
    app.command("validate")(validate_command)
    app.command("preprocess")(preprocess_command)
