"""Export a run's generator to ONNX and check it against PyTorch on the same inputs.

Three shapes of generator leave here, each as self-contained ``.onnx`` files (weights inside):

- latent families: ``generator.onnx``, ``z`` (B, Z) float32 [+ ``label`` (B,) int64] -> ``image``;
- StyleGAN: ``mapping.onnx`` (``z`` (B, Z) -> ``w`` (B, W)) and ``synthesis.onnx`` (``w`` (B, W)
  -> ``image``), so that the page can truncate towards ``w_avg`` and move along directions of W;
- image-to-image families: ``generator.onnx``, ``input`` (B, C, h, w) -> ``image``.

Images are (B, C, H, W) float32 in [-1, 1], as ``RunGenerator.generate`` gives them.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gan_models.errors import GanopsError
from gan_models.sampling import RunGenerator
from gan_models.training.generate import sample_latents

# The largest difference between onnxruntime's and torch's images that an export may show.
TOLERANCE = 1e-4


class _Latent(nn.Module):
    """z (B, Z) [+ label (B,)] -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, gen: RunGenerator):
        super().__init__()
        self.nets = nn.ModuleDict(gen.nets)
        self.generate = gen.family.generate

    def forward(self, z: Tensor, label: Tensor | None = None) -> Tensor:
        return self.generate(dict(self.nets), z, label).clamp(-1, 1)


class _Mapping(nn.Module):
    """StyleGAN z (B, Z) -> w (B, W), untruncated (the page truncates towards w_avg)."""

    def __init__(self, gen: RunGenerator):
        super().__init__()
        self.mapping = gen.nets["G"].mapping

    def forward(self, z: Tensor) -> Tensor:
        return self.mapping(z)[:, 0]  # every style layer gets the same w: (B, W)


class _Synthesis(nn.Module):
    """StyleGAN w (B, W) -> images (B, C, H, W), with the constant noise maps of sampling."""

    def __init__(self, gen: RunGenerator):
        super().__init__()
        self.synthesis = gen.nets["G"].synthesis
        self.num_ws = gen.nets["G"].num_ws

    def forward(self, w: Tensor) -> Tensor:
        ws = w[:, None, :].expand(-1, self.num_ws, -1)  # (B, L, W)
        return self.synthesis(ws, "const").clamp(-1, 1)


@dataclass
class ExportedModel:
    """One exported graph, the inputs it was checked on and the largest difference seen."""

    file: str
    inputs: dict[str, list[int]]  # input name -> shape with -1 for the batch
    max_abs_diff: float


def generator_kind(gen: RunGenerator) -> str:
    """``image`` (image-to-image), ``style`` (StyleGAN) or ``latent``."""
    if gen.family.takes_inputs:
        return "image"
    if gen.family.styled is not None:  # mapping + synthesis
        return "style"
    return "latent"


def _export(module: nn.Module, args: tuple[Tensor, ...], names: list[str], path: Path) -> None:
    """torch.onnx (dynamo exporter) with a dynamic batch and the weights inside the file."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: batch} for _ in names)  # by position: forward's names differ
    try:
        quiet = logging.getLogger("torch.onnx")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # e.g. "torchvision is not installed" (not used here)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module.eval(),
                args,
                input_names=names,
                output_names=["out"],
                dynamic_shapes=dynamic,
                external_data=False,
                dynamo=True,
                verbose=False,
            )
        program.save(str(path), external_data=False)
    except Exception as e:  # the exporter raises many kinds; name the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GanopsError(f"cannot export this generator to ONNX: {first[:300]}") from None
    finally:
        quiet.setLevel(level)


def _check(path: Path, module: nn.Module, feeds: dict[str, np.ndarray]) -> float:
    """Largest |onnxruntime - torch| over the outputs for the same inputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, feeds)
    with torch.no_grad():
        want = module(*[torch.from_numpy(v) for v in feeds.values()]).float().numpy()
    if got.shape != want.shape:
        raise GanopsError(f"{path.name}: ONNX output shape {got.shape}, torch gives {want.shape}")
    return float(np.abs(got - want).max())


def export_onnx(gen: RunGenerator, out_dir: Path, n_check: int = 8) -> list[ExportedModel]:
    """Write the generator's ONNX file(s) into ``out_dir`` and check each against torch.

    Raises GanopsError when a graph cannot be exported or differs from torch by more than
    ``TOLERANCE`` on ``n_check`` seeded inputs.
    """
    gen.nets = {k: m.cpu().eval() for k, m in gen.nets.items()}
    kind = generator_kind(gen)
    z_dim = gen.params.model.latent_dim
    z = sample_latents(n_check, z_dim, seed=12345).float()  # (n, Z)
    jobs: list[tuple[str, nn.Module, dict[str, np.ndarray]]] = []
    if kind == "image":
        x = gen.inputs(n_check, seed=12345)
        assert x is not None
        jobs.append(("generator.onnx", _Latent(gen), {"input": x.float().numpy()}))
    elif kind == "style":
        mapping = _Mapping(gen)
        with torch.no_grad():
            w = mapping(z)
        jobs.append(("mapping.onnx", mapping, {"z": z.numpy()}))
        jobs.append(("synthesis.onnx", _Synthesis(gen), {"w": w.numpy()}))
    else:
        feeds = {"z": z.numpy()}
        if gen.family.conditional:
            classes = gen.spec.num_classes or 1
            feeds["label"] = (np.arange(n_check) % classes).astype(np.int64)
        jobs.append(("generator.onnx", _Latent(gen), feeds))

    exported = []
    for name, module, feeds in jobs:
        path = out_dir / name
        args = tuple(torch.from_numpy(v) for v in feeds.values())
        _export(module, args, list(feeds), path)
        diff = _check(path, module, feeds)
        if not diff <= TOLERANCE:
            raise GanopsError(
                f"{name}: the ONNX model differs from the PyTorch generator by {diff:.2e} "
                f"(allowed {TOLERANCE:.0e}) on the same inputs"
            )
        shapes = {k: [-1, *v.shape[1:]] for k, v in feeds.items()}
        exported.append(ExportedModel(name, shapes, diff))
    return exported
