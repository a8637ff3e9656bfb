"""Generate from a finished (or running) training run folder."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gan_models.data.format import ImageSet
from gan_models.errors import DataError, GanopsError
from gan_models.families import FAMILIES, get_family
from gan_models.families.base import DataSpec, Family, Nets
from gan_models.training.batches import load_training_set
from gan_models.training.checkpoint import latest_checkpoint, load_checkpoint
from gan_models.training.device import select_device
from gan_models.training.generate import generate_from_latents, generate_images, sample_latents
from gan_models.training.params import TrainParams, load_run_config
from gan_models.utils.images import interleave_pairs, save_grid_png
from gan_models.utils.io import atomic_path


@dataclass
class RunGenerator:
    """A trained generator with what it needs to sample: family, params, data spec."""

    family: Family
    params: TrainParams
    spec: DataSpec
    nets: Nets
    source: str
    # the run's training data once loaded for sample_inputs (False: not on disk)
    _data: ImageSet | bool | None = field(default=None, repr=False)

    @classmethod
    def from_run_dir(
        cls, run_dir: str | Path, device: str = "cpu", use_ema: bool = True
    ) -> RunGenerator:
        """Load the final generator, or the newest checkpoint's if the run has not finished."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file() or not (run_dir / "spec.json").is_file():
            raise GanopsError(f"{run_dir} is not a training run folder (no config.yaml/spec.json)")
        params = load_run_config(run_dir / "config.yaml")
        spec = DataSpec(**json.loads((run_dir / "spec.json").read_text()))
        family = get_family(params.model.family)
        nets = family.build(params, spec)
        dev = select_device(device)
        final = run_dir / "generator.safetensors"
        if final.is_file() and use_ema:
            from safetensors.torch import load_file

            weights = load_file(str(final))
            for name in family.ema_nets:
                prefix = f"{name}."
                nets[name].load_state_dict(
                    {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
                )
            source = str(final)
        else:
            found = latest_checkpoint(run_dir)
            if found is None:
                raise GanopsError(f"{run_dir} has no generator.safetensors and no checkpoint yet")
            state = load_checkpoint(found[1])
            table = state["ema"] if use_ema and state["ema"] else state["nets"]
            for name in family.ema_nets:
                nets[name].load_state_dict(table[name])
            source = str(found[1])
        nets = {k: m.to(dev).eval() for k, m in nets.items()}
        return cls(family, params, spec, nets, source)

    def inputs(self, n: int, seed: int, data: ImageSet | None = None) -> torch.Tensor | None:
        """n seeded real inputs (n, C, h, w) of an image-to-image family, else None.

        Drawn by the family's ``sample_inputs`` from ``data``, by default the run's own training
        data when it is on disk; otherwise (a registered model away from its data) from the
        real inputs the generator remembered in training (``G.bank``).
        """
        if self.family.sample_inputs is None:
            return None
        if data is None:
            data = self._training_data()
        if data is not None:
            return self.family.sample_inputs(self.params, self.spec, data, n, seed)
        z = sample_latents(n, self.params.model.latent_dim, seed)  # (n, Z) picks stored inputs
        bank = self.nets["G"].bank
        return bank.pick(z.to(bank.images.device)).float().cpu()

    def _training_data(self) -> ImageSet | None:
        if self._data is None:
            try:
                self._data = load_training_set(self.params.data.path, self.params.data.split)
            except DataError:
                self._data = False  # not on disk here: use the stored inputs
        return self._data or None

    def generate(
        self,
        n: int,
        seed: int,
        labels: torch.Tensor | None = None,
        data: ImageSet | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n images (n, C, H, W) in [-1, 1]; the same seed always gives the same images.

        Image-to-image families translate :meth:`inputs` (from ``data`` when given).
        """
        x = self.inputs(n, seed, data)
        if x is not None:
            return generate_from_latents(self.family, self.nets, x), None
        return generate_images(self.family, self.nets, self.params, self.spec, n, seed, labels)

    @torch.no_grad()
    def generate_styled(
        self,
        n: int,
        seed: int,
        *,
        psi: float = 1.0,
        mix_seed: int | None = None,
        crossover: int | None = None,
    ) -> torch.Tensor:
        """StyleGAN sampling with truncation ``psi`` and style mixing with ``mix_seed``'s latents:
        style layers below ``crossover`` (default: half of them) come from ``seed``."""
        if self.family.styled is None:
            styled = " and ".join(sorted(n for n, f in FAMILIES.items() if f.styled))
            raise GanopsError(
                f"--truncation, --mix-seed and --crossover apply to the {styled} family, "
                f"not {self.family.name}"
            )
        if mix_seed is None and crossover is not None:
            raise GanopsError("--crossover needs --mix-seed: the second seed to mix with")
        device = next(self.nets["G"].parameters()).device
        z = sample_latents(n, self.params.model.latent_dim, seed).to(device)  # (n, Z)
        z2 = None
        if mix_seed is not None:
            z2 = sample_latents(n, self.params.model.latent_dim, mix_seed).to(device)
        images = self.family.styled(self.nets, z, psi, z2, crossover)
        return images.float().cpu().clamp_(-1, 1)  # (n, C, H, W)


def write_samples(
    images: torch.Tensor,
    out: str | Path,
    nrow: int | None = None,
    inputs: torch.Tensor | None = None,
) -> Path:
    """``.png``: a grid; ``.npy``: the raw float32 images (N, C, H, W), for exact comparison.

    With the ``inputs`` of an image-to-image generator, the grid shows each input next to its
    output (the ``.npy`` file holds the outputs only).
    """
    out = Path(out)
    if inputs is not None and out.suffix == ".png":
        pairs = interleave_pairs(inputs, images)  # (2N, C, H, W)
        cols = nrow or 2 * math.ceil(math.sqrt(images.shape[0] / 2))  # even: pairs side by side
        return save_grid_png(pairs, out, nrow=cols, scale=2 if images.shape[-1] < 64 else 1)
    if out.suffix == ".npy":
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.save(f, images.float().numpy())
        return out
    if out.suffix == ".png":
        small = images.shape[-1] < 64
        nrow = nrow or math.ceil(math.sqrt(images.shape[0]))  # a square-ish grid
        return save_grid_png(images, out, nrow=nrow, scale=2 if small else 1)
    raise GanopsError(f"-o {out}: expected a .png (grid) or .npy (raw images) file name")
