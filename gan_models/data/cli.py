"""``ganops data``: fetch raw datasets and list the sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from gan_models.data.sources import SOURCES, fetch


def summary(meta: dict[str, Any], path: Path) -> str:
    """One line: name, count, shape, labels or classes, and where it was written."""
    shapes = {k: "x".join(str(d) for d in v[1:]) for k, v in meta["arrays"].items()}
    counts = {k: v[0] for k, v in meta["arrays"].items()}
    kind = meta.get("kind", "images")
    if kind == "images":
        body = f"{counts['images']} images {shapes['images']} uint8"
    elif kind == "paired":
        body = f"{counts['a']} pairs, a {shapes['a']}, b {shapes['b']} uint8"
    else:
        body = f"a {counts['a']} images {shapes['a']}, b {counts['b']} images {shapes['b']} uint8"
    names = meta.get("class_names")
    if names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        labels = f"{len(names)} classes ({shown})"
    else:
        labels = "no labels"
    return f"{meta['name']} [{meta['source']}]: {body}, {labels} -> {path}"


def fetch_cmd(
    source: str = typer.Argument(..., help="One of the sources listed by `ganops data sources`."),
    name: str = typer.Option(..., "--name", help="Dataset name: writes OUT_ROOT/NAME/."),
    path: Path | None = typer.Option(
        None,
        "--path",
        help="Input folder (folder, paired, unpaired), the original files of "
        "mnist/fashion-mnist/cifar10 for offline use, or the npm tarball (or unpacked package) "
        "of twemoji/noto (twemoji-noto: a folder holding both tarballs).",
    ),
    out_root: Path = typer.Option(Path("data/raw"), "--out-root", help="Where raw datasets live."),
    image_size: int | None = typer.Option(
        None,
        "--image-size",
        min=1,
        help="Folder sources: center-crop every image to a square and resize to SxS (bicubic); "
        "photos: the crop size (default 64).",
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Where downloads and npm tarballs are kept (default: $GANOPS_CACHE_DIR/downloads "
        "or ~/.cache/ganops/downloads).",
    ),
    mirror: str | None = typer.Option(
        None,
        "--mirror",
        help="Base URL serving the original files (same sha256), e.g. an internal mirror.",
    ),
) -> None:
    """Turn SOURCE into the raw dataset OUT_ROOT/NAME (images.npy, labels.npy, meta.json)."""
    meta = fetch(
        source,
        name,
        path=path,
        out_root=out_root,
        image_size=image_size,
        cache_dir=cache_dir,
        mirror=mirror,
    )
    typer.echo(summary(meta, out_root / name))


def sources_cmd() -> None:
    """List the data sources with their kind and description, and the licence of third-party
    artwork on a line below."""
    width = max(len(n) for n in SOURCES)
    for s in SOURCES.values():
        typer.echo(f"{s.name:<{width}}  {s.kind:<8}  {s.description}")
        if s.licence:
            typer.echo(f"{'':<{width}}  {'':<8}  licence: {s.licence}")


def register_commands(app: typer.Typer) -> None:
    """Add ``fetch`` and ``sources`` to ``app`` (the root CLI mounts them under ``ganops data``)."""
    app.command("fetch")(fetch_cmd)
    app.command("sources")(sources_cmd)
