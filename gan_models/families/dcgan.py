"""DCGAN: strided (transposed) convolutions with batch norm (Radford et al. 2016).

The networks here also serve WGAN, WGAN-GP and the conditional GAN, which change the objective,
the critic's normalisation or the conditioning, not the convolutional stack.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import Tensor, nn

from gan_models.families.base import DataSpec, Family, Nets, Phase
from gan_models.families.common import (
    PAIR_LOSS_KEYS,
    generate,
    require_power_of_two,
    single_pair_phases,
)
from gan_models.layers import maybe_sn, norm2d

if TYPE_CHECKING:
    from gan_models.training.params import TrainParams


# DCGAN generator: project z to 4x4, then double the size per block up to the image size.
class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int):
        super().__init__()
        n_up = int(math.log2(image_size // 4))  # 4 -> image_size
        ch = width * 2 ** (n_up - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(z[:, :, None, None])  # (B, Z, 1, 1) -> (B, C, H, W)


# DCGAN discriminator: halve the size per block down to 4x4, then one 4x4 conv to a logit.
class DCGANDiscriminator(nn.Module):
    def __init__(
        self, channels: int, image_size: int, width: int, norm: str = "batch", sn: bool = False
    ):
        super().__init__()
        n_down = int(math.log2(image_size // 4))
        layers: list[nn.Module] = [
            maybe_sn(nn.Conv2d(channels, width, 4, 2, 1), sn),
            nn.LeakyReLU(0.2, True),
        ]
        ch = width
        for _ in range(n_down - 1):
            layers += [
                maybe_sn(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm == "none"), sn),
                norm2d(norm, ch * 2),
                nn.LeakyReLU(0.2, True),
            ]
            ch *= 2
        self.body = nn.Sequential(*layers)  # (B, ch, 4, 4)
        self.head = maybe_sn(nn.Conv2d(ch, 1, 4, 1, 0), sn)  # (B, 1, 1, 1)
        self.feature_channels = ch

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.head(self.body(x)).flatten()  # (B,)


# The shared model keys build_pair reads (DCGAN, WGAN, WGAN-GP networks).
NET_KEYS = frozenset({"model.latent_dim", "model.width", "model.spectral_norm", "model.d_norm"})


def build_pair(params: TrainParams, spec: DataSpec, default_norm: str) -> Nets:
    m = params.model
    return {
        "G": DCGANGenerator(m.latent_dim, spec.channels, spec.image_size, m.width),
        "D": DCGANDiscriminator(
            spec.channels, spec.image_size, m.width, m.d_norm or default_norm, m.spectral_norm
        ),
    }


def build(params: TrainParams, spec: DataSpec) -> Nets:
    return build_pair(params, spec, "batch")


def phases(params: TrainParams, spec: DataSpec) -> list[Phase]:
    return single_pair_phases(FAMILY, params, spec)


FAMILY = Family(
    name="dcgan",
    description="convolutional G and D with batch norm, non-saturating loss",
    paper="Radford et al. 2016, Unsupervised Representation Learning with DCGANs",
    build=build,
    phases=phases,
    generate=generate,
    check=require_power_of_two,
    reads=NET_KEYS | PAIR_LOSS_KEYS,
)
