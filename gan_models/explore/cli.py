"""`ganops explore`: the generator explorer, exported and served (or written for a static host)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from gan_models.errors import GanopsError


def load_generator(source: str):
    """A run folder or a registry URI as a RunGenerator on the CPU."""
    from gan_models.sampling import RunGenerator

    if source.startswith("models:/"):
        from gan_models.tracking import load_registered_generator

        return load_registered_generator(source, device="cpu")
    run = Path(source)
    if not run.is_dir():
        raise GanopsError(
            f"{source}: no such run folder (expected a run folder or models:/NAME@ALIAS)"
        )
    if not (run / "generator.safetensors").is_file() and not any(run.glob("checkpoints/*")):
        raise GanopsError(
            f"{source}: this run folder holds no generator yet (no generator.safetensors, no checkpoint)"
        )
    return RunGenerator.from_run_dir(run, device="cpu")


def explore_cmd(
    source: Annotated[str, typer.Argument(help="a run folder or models:/NAME@ALIAS (or /VERSION)")],
    port: Annotated[int, typer.Option(help="port to serve the page on")] = 8765,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    export: Annotated[
        Path | None,
        typer.Option(
            "--export", help="write the bundle to DIR for any static host instead of serving"
        ),
    ] = None,
) -> None:
    """Explore a generator in the browser: breed, interpolate and steer it, or translate images."""
    from gan_models.explore.server import make_server

    if not 0 < port < 65536:
        raise GanopsError(f"--port {port}: expected a port number in 1..65535")
    server = None
    if export is None:
        server = make_server(host, port)  # a port in use fails before the export
    gen = load_generator(source)
    scratch = None if export is not None else Path(tempfile.mkdtemp(prefix="ganops-explore-"))
    folder = export if scratch is None else scratch / "bundle"
    try:
        _export_and_serve(gen, folder, server, host, port)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _export_and_serve(gen, folder: Path, server, host: str, port: int) -> None:
    from gan_models.explore.bundle import bundle_size, write_bundle

    t0 = time.perf_counter()
    info = write_bundle(gen, folder)
    diffs = ", ".join(f"{k} {v['max_abs_diff']:.1e}" for k, v in info["models"].items())
    typer.echo(
        f"exported {info['family']} to ONNX in {time.perf_counter() - t0:.1f} s "
        f"(max |onnx - torch|: {diffs}); bundle {bundle_size(folder) / 1e6:.1f} MB in {folder}"
    )
    if server is None:
        typer.echo(f"serve it with any static server, e.g. python -m http.server -d {folder}")
        return
    server.directory = str(folder)
    typer.echo(f"explorer on http://{host}:{port}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register_commands(app: typer.Typer) -> None:
    """Add ``explore`` to ``app`` (the root CLI mounts it at the top level)."""
    app.command("explore")(explore_cmd)
