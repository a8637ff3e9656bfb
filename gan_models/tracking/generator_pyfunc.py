"""The MLflow pyfunc of a ganops generator, logged as code ("models from code", no pickling).

MLflow copies this file into the logged model and runs it at load time; ``set_model`` at the
bottom hands it the model object. ``load_context`` rebuilds the family's networks through the
installed ``gan_models`` package (its family registry, the run's config.yaml and spec.json) and
loads the EMA weights from generator.safetensors, exactly as :class:`RunGenerator` loads a run
folder, so a seed gives the same images from the registry as from the run folder.

``predict`` accepts either form:

- latents: ``{"latent": float32 (N, Z)}`` (+ ``"label"``: int64 (N,) for conditional families);
  this is the logged signature, what ``mlflow models serve`` and ``PyFuncModel.predict`` check;
- a seed request: ``{"seed": S, "n": N}`` (+ ``"label"``), a dict or a one-row DataFrame, the
  same draw as ``ganops sample -n N --seed S``. The signature does not declare it, so it reaches
  the model through ``PyFuncModel.unwrap_python_model().predict(None, ...)``.

Both return images (N, C, H, W) float32 in [-1, 1].
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

# The run-folder names that RunGenerator.from_run_dir reads, keyed by the model's artifact names.
RUN_FILES = {
    "generator": "generator.safetensors",
    "config": "config.yaml",
    "spec": "spec.json",
}


def _run_folder(artifacts: dict[str, str]) -> Path:
    """A folder holding the three run files under their run-folder names.

    MLflow keeps each artifact's file name, so they normally already sit together; otherwise
    they are linked into a temporary folder.
    """
    paths = {k: Path(artifacts[k]) for k in RUN_FILES}
    folder = paths["config"].parent
    if all(folder / name == paths[k] for k, name in RUN_FILES.items()):
        return folder
    tmp = Path(tempfile.mkdtemp(prefix="ganops-generator-"))
    for k, name in RUN_FILES.items():
        os.symlink(paths[k].resolve(), tmp / name)
    return tmp


class GeneratorModel(PythonModel):
    """A trained ganops generator as an MLflow pyfunc."""

    # The logged tensor signature validates inputs; MLflow's type-hint validation of predict
    # (and its warning that predict has no list[...] hints) is not wanted on top of it.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from gan_models.sampling import RunGenerator

        device = (context.model_config or {}).get("device", "cpu")
        self.generator = RunGenerator.from_run_dir(_run_folder(context.artifacts), device=device)

    def generate(
        self, n: int, seed: int, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n images (n, C, H, W) in [-1, 1] and their labels, as ``RunGenerator.generate``."""
        return self.generator.generate(n, seed, labels)

    def from_latents(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] for latents z (N, Z), batched as sampling does."""
        from gan_models.training.generate import generate_from_latents

        g = self.generator
        if g.family.conditional and labels is None:
            labels = torch.arange(z.shape[0]) % g.spec.num_classes  # (N,), cycled as sampling does
        return generate_from_latents(g.family, g.nets, z, labels)

    # predict has no type hints on purpose: MLflow reads them as an input schema (and warns
    # when they are not list[...]); the logged signature is the schema.
    def predict(self, context, model_input, params=None):
        """Latents or a seed request -> images (N, C, H, W) float32 in [-1, 1]."""
        data = _as_mapping(model_input)
        labels = data.get("label")
        if labels is not None:
            labels = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1)  # (N,)
        if "latent" in data:
            z = np.asarray(_stack(data["latent"]), dtype=np.float32)  # (N, Z)
            return self.from_latents(torch.from_numpy(z), labels).numpy()
        if "seed" in data:
            seed = int(np.asarray(data["seed"]).reshape(-1)[0])
            n_raw = data.get("n")
            n = int(np.asarray(n_raw).reshape(-1)[0]) if n_raw is not None else 1
            if labels is not None and labels.shape[0] != n:
                raise ValueError(f"label: expected {n} labels for n={n}, got {labels.shape[0]}")
            images, _ = self.generate(n, seed, labels)
            return images.numpy()
        raise ValueError(
            f"expected an input with 'latent' (N, Z) or 'seed' (and 'n'), got {sorted(data)}"
        )


def _as_mapping(model_input: Any) -> dict[str, Any]:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if "seed" in model_input.columns and "latent" not in model_input.columns:
            return model_input.iloc[0].to_dict()  # one row: seed, n and a list of labels
        return {k: list(model_input[k]) for k in model_input.columns}  # a row per latent
    if isinstance(model_input, dict):
        return model_input
    if isinstance(model_input, np.ndarray):
        return {"latent": model_input}
    raise ValueError(f"expected a dict, a DataFrame or an array, got {type(model_input).__name__}")


def _stack(rows: Any) -> np.ndarray:
    if isinstance(rows, np.ndarray) and rows.dtype != object:
        return rows
    return np.stack([np.asarray(r, dtype=np.float32) for r in rows])


mlflow.models.set_model(GeneratorModel())
