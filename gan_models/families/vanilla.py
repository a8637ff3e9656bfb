"""Vanilla GAN: multilayer perceptrons for G and D (Goodfellow et al. 2014)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field
from torch import Tensor, nn

from gan_models.families.base import DataSpec, Family, FamilyOptions, Nets, Phase
from gan_models.families.common import PAIR_LOSS_KEYS, generate, single_pair_phases
from gan_models.layers import maybe_sn

if TYPE_CHECKING:
    from gan_models.training.params import TrainParams


# MLP generator: z -> hidden layers -> tanh image (Goodfellow et al. 2014).
class MLPGenerator(nn.Module):
    def __init__(self, latent_dim: int, shape: tuple[int, int, int], width: int, depth: int):
        super().__init__()
        self.shape = shape
        layers: list[nn.Module] = []
        dim = latent_dim
        for i in range(depth):
            out = width * 2**i
            layers += [nn.Linear(dim, out), nn.BatchNorm1d(out), nn.ReLU(inplace=True)]
            dim = out
        c, h, w = shape
        layers += [nn.Linear(dim, c * h * w), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(z).view(z.shape[0], *self.shape)  # (B, C, H, W)


# MLP discriminator: flattened image -> hidden layers -> one logit (Goodfellow et al. 2014).
class MLPDiscriminator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], width: int, depth: int, sn: bool = False):
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = [nn.Flatten()]
        dim = c * h * w
        for i in reversed(range(depth)):
            out = width * 2**i
            layers += [maybe_sn(nn.Linear(dim, out), sn), nn.LeakyReLU(0.2, inplace=True)]
            dim = out
        layers.append(maybe_sn(nn.Linear(dim, 1), sn))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(x).squeeze(1)  # (B,)


def build(params: TrainParams, spec: DataSpec) -> Nets:
    m = params.model
    shape = (spec.channels, spec.image_size, spec.image_size)
    return {
        "G": MLPGenerator(m.latent_dim, shape, m.width, m.depth),
        "D": MLPDiscriminator(shape, m.width, m.depth, m.spectral_norm),
    }


def phases(params: TrainParams, spec: DataSpec) -> list[Phase]:
    return single_pair_phases(FAMILY, params, spec)


class VanillaModel(FamilyOptions):
    """Vanilla's own ``model`` keys."""

    depth: int = Field(3, ge=1, description="hidden layers of the MLP generator and discriminator")


FAMILY = Family(
    name="vanilla",
    description="MLP generator and discriminator, non-saturating loss",
    paper="Goodfellow et al. 2014, Generative Adversarial Nets",
    build=build,
    phases=phases,
    generate=generate,
    # MLP D: no normalisation layers to choose (model.d_norm)
    reads=PAIR_LOSS_KEYS | {"model.latent_dim", "model.width", "model.spectral_norm"},
    options={"model": VanillaModel},
)
