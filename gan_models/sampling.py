"""Generate from a finished (or running) training run folder."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gan_models.config import TrainParams, load_params
from gan_models.errors import GanopsError
from gan_models.families import get_family
from gan_models.families.base import DataSpec, Family, Nets
from gan_models.training.checkpoint import latest_checkpoint, load_checkpoint
from gan_models.training.loop import generate_images, sample_latents, select_device
from gan_models.utils.images import save_grid_png
from gan_models.utils.io import atomic_path


@dataclass
class RunGenerator:
    """A trained generator with what it needs to sample: family, params, data spec."""

    family: Family
    params: TrainParams
    spec: DataSpec
    nets: Nets
    source: str

    @classmethod
    def from_run_dir(
        cls, run_dir: str | Path, device: str = "cpu", use_ema: bool = True
    ) -> RunGenerator:
        """Load the final generator, or the newest checkpoint's if the run has not finished."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file() or not (run_dir / "spec.json").is_file():
            raise GanopsError(f"{run_dir} is not a training run folder (no config.yaml/spec.json)")
        params = load_params(run_dir / "config.yaml", TrainParams)
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

    def generate(
        self, n: int, seed: int, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n images (n, C, H, W) in [-1, 1]; the same seed always gives the same images."""
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
        from gan_models.families import stylegan

        if self.family.name != "stylegan":
            raise GanopsError(
                f"--truncation, --mix-seed and --crossover apply to the stylegan family, "
                f"not {self.family.name}"
            )
        device = next(self.nets["G"].parameters()).device
        z = sample_latents(n, self.params.model.latent_dim, seed).to(device)  # (n, Z)
        if mix_seed is None:
            if crossover is not None:
                raise GanopsError("--crossover needs --mix-seed: the second seed to mix with")
            images = stylegan.generate(self.nets, z, psi=psi)
        else:
            z2 = sample_latents(n, self.params.model.latent_dim, mix_seed).to(device)
            layer = self.nets["G"].num_ws // 2 if crossover is None else crossover
            images = stylegan.generate_mixed(self.nets, z, z2, layer, psi=psi)
        return images.float().cpu().clamp_(-1, 1)  # (n, C, H, W)


def write_samples(images: torch.Tensor, out: str | Path, nrow: int | None = None) -> Path:
    """``.png``: a grid; ``.npy``: the raw float32 images (N, C, H, W), for exact comparison."""
    out = Path(out)
    if out.suffix == ".npy":
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.save(f, images.float().numpy())
        return out
    if out.suffix == ".png":
        small = images.shape[-1] < 64
        nrow = nrow or math.ceil(math.sqrt(images.shape[0]))  # a square-ish grid
        return save_grid_png(images, out, nrow=nrow, scale=2 if small else 1)
    raise GanopsError(f"-o {out}: expected a .png (grid) or .npy (raw images) file name")
