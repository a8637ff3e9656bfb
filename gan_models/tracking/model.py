"""The generator as an MLflow model: logging it from a run folder and loading it from the registry.

The model is a pyfunc defined from code (:mod:`gan_models.tracking.generator_pyfunc`): MLflow
stores the code file and the artifacts (generator.safetensors, config.yaml, spec.json, the model
card and a sample grid), nothing is pickled, and loading rebuilds the networks through the
family registry. Its signature is tensor-based::

    inputs:  latent float32 (-1, Z)   [+ label int64 (-1,) for conditional families]
    outputs: images float32 (-1, C, H, W) in [-1, 1]

Latents are what a serving client can always produce; ``sample_latents(n, Z, seed)`` (a CPU
``torch.Generator`` seeded with ``seed``) gives the latents of ``ganops sample --seed``.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gan_models.errors import GanopsError
from gan_models.sampling import RunGenerator
from gan_models.training.generate import sample_latents
from gan_models.utils.io import sha256_file

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

GENERATOR_CODE = Path(__file__).with_name("generator_pyfunc.py")
MODEL_NAME_IN_RUN = "generator"
# What the generator needs at load time besides gan_models itself. ganops is deliberately not
# listed: it is not on a public index, and a same-named package there must never be installed.
_REQUIREMENTS = ("torch", "numpy", "safetensors", "pyyaml", "pydantic", "tqdm", "pillow")


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged model (local version tags such as +cpu dropped)."""
    reqs = []
    for dist in (*_REQUIREMENTS, "mlflow"):
        version = importlib.metadata.version(dist).split("+")[0]
        reqs.append(f"{dist}=={version}")
    return reqs


def check_run_folder(run_dir: str | Path) -> Path:
    """The run folder, if it holds a finished generator; else a clear error."""
    run_dir = Path(run_dir)
    missing = [
        f
        for f in ("generator.safetensors", "config.yaml", "spec.json")
        if not (run_dir / f).is_file()
    ]
    if missing:
        raise GanopsError(
            f"{run_dir}: no finished generator ({', '.join(missing)} missing); "
            "train it to the end first"
        )
    return run_dir


def signature_and_example(gen: RunGenerator, n: int = 2) -> tuple[Any, dict[str, np.ndarray]]:
    """The tensor signature of a generator and an input example of ``n`` latents."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    z_dim = gen.params.model.latent_dim
    example = {"latent": sample_latents(n, z_dim, 0).numpy()}  # (n, Z)
    inputs = [TensorSpec(np.dtype(np.float32), (-1, z_dim), "latent")]
    if gen.family.conditional:
        example["label"] = (np.arange(n) % gen.spec.num_classes).astype(np.int64)  # (n,)
        inputs.append(TensorSpec(np.dtype(np.int64), (-1,), "label"))
    images, _ = gen.generate(1, 0)  # (1, C, H, W): the output shape, whatever the family
    out = TensorSpec(np.dtype(np.float32), (-1, *images.shape[1:]), "images")
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([out])), example


def newest_grid(run_dir: Path) -> Path | None:
    grids = sorted((run_dir / "samples").glob("step_*.png"))
    return grids[-1] if grids else None


def _explorer_bundle(gen: RunGenerator, folder: Path) -> Path | None:
    """The generator's in-browser explorer (``ganops explore``), stored with every model.

    A generator that cannot be exported, or a host without onnxruntime-web, still registers;
    the reason is printed, never skipped silently.
    """
    from gan_models.explore.bundle import write_bundle

    try:
        write_bundle(gen, folder)
    except GanopsError as e:
        print(f"warning: the model is logged without its explorer: {e}", file=sys.stderr)
        return None
    return folder


def log_generator_model(
    run_dir: str | Path,
    *,
    card: str | None = None,
    name: str = MODEL_NAME_IN_RUN,
    tags: dict[str, str] | None = None,
) -> ModelInfo:
    """Log a run folder's generator as a models-from-code pyfunc to the active MLflow run.

    Returns MLflow's ``ModelInfo`` (``model_uri``, ``model_id``). The card, if given, is stored
    in the model as card.md beside the newest sample grid (samples.png).
    """
    import tempfile

    import mlflow

    run_dir = check_run_folder(run_dir)
    gen = RunGenerator.from_run_dir(run_dir)
    signature, example = signature_and_example(gen)
    artifacts = {
        "generator": str(run_dir / "generator.safetensors"),
        "config": str(run_dir / "config.yaml"),
        "spec": str(run_dir / "spec.json"),
    }
    with tempfile.TemporaryDirectory(prefix="ganops-card-") as tmp:
        grid = newest_grid(run_dir)
        if grid is not None:
            (Path(tmp) / "samples.png").write_bytes(grid.read_bytes())
            artifacts["samples"] = str(Path(tmp) / "samples.png")
        if card is not None:
            (Path(tmp) / "card.md").write_text(card)
            artifacts["card"] = str(Path(tmp) / "card.md")
        explorer = _explorer_bundle(gen, Path(tmp) / "explorer")
        if explorer is not None:
            artifacts["explorer"] = str(explorer)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(GENERATOR_CODE),
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            model_config={"device": "cpu"},  # declared so that load_model may override it
            metadata={
                "family": gen.family.name,
                "params_digest": gen.params.digest(),
                "latent_dim": gen.params.model.latent_dim,
                "conditional": gen.family.conditional,
            },
            tags={
                "generator_sha256": sha256_file(run_dir / "generator.safetensors"),
                **(tags or {}),
            },
        )


def load_registered_generator(
    uri: str, *, device: str = "cpu", tracking_uri: str | None = None
) -> RunGenerator:
    """Load ``models:/NAME@alias`` or ``models:/NAME/VERSION`` as a :class:`RunGenerator`.

    ``generate(n, seed)`` gives exactly the images that sampling the original run folder gives.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from gan_models.tracking.store import (
        check_reachable,
        resolve_tracking_uri,
        using_tracking_uri,
    )

    if not uri.startswith("models:/"):
        raise GanopsError(f"{uri}: expected a registry URI, models:/NAME@ALIAS or models:/NAME/N")
    tracking = resolve_tracking_uri(tracking_uri)
    check_reachable(tracking)
    with using_tracking_uri(tracking):
        try:
            model = mlflow.pyfunc.load_model(uri, model_config={"device": device})
        except MlflowException as e:
            raise GanopsError(f"{uri}: cannot load the model ({e.message})") from None
    impl = model.unwrap_python_model()
    gen = getattr(impl, "generator", None)
    if not isinstance(gen, RunGenerator):
        raise GanopsError(f"{uri}: not a ganops generator model")
    gen.source = uri
    return gen
