"""Conditional GAN: class labels condition G (embedding concatenated to z) and D (projection).

Mirza & Osindero 2014 introduced the conditioning; the discriminator uses the projection form
of Miyato & Koyama 2018, which trains more stably than concatenating labels to the input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import Tensor, nn

from gan_models.errors import ConfigError
from gan_models.families.base import DataSpec, Family, FamilyOptions, Nets, Phase
from gan_models.families.common import (
    PAIR_LOSS_KEYS,
    generate,
    require_power_of_two,
    single_pair_phases,
)
from gan_models.families.dcgan import NET_KEYS, DCGANDiscriminator, DCGANGenerator
from gan_models.layers import maybe_sn

if TYPE_CHECKING:
    from gan_models.training.params import TrainParams


# Conditional generator: a DCGAN generator fed [z, embed(label)] (Mirza & Osindero 2014).
class ConditionalGenerator(nn.Module):
    def __init__(self, latent_dim: int, num_classes: int, embed_dim: int, **dcgan_kwargs):
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.net = DCGANGenerator(latent_dim + embed_dim, **dcgan_kwargs)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        assert labels is not None, "a conditional generator needs labels"
        return self.net(torch.cat([z, self.embed(labels)], dim=1))  # (B, C, H, W)


# Projection discriminator: logit = head(h) + <embed(y), sum_hw h> (Miyato & Koyama 2018).
class ProjectionDiscriminator(nn.Module):
    def __init__(self, num_classes: int, sn: bool = False, **dcgan_kwargs):
        super().__init__()
        self.net = DCGANDiscriminator(sn=sn, **dcgan_kwargs)
        self.embed = maybe_sn(nn.Embedding(num_classes, self.net.feature_channels), sn)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        assert labels is not None, "a conditional discriminator needs labels"
        h = self.net.body(x)  # (B, ch, 4, 4)
        logit = self.net.head(h).flatten()  # (B,)
        return logit + (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1)


def check(params: TrainParams, spec: DataSpec) -> None:
    require_power_of_two(params, spec)
    if not spec.num_classes:
        raise ConfigError(
            f"model.family: cgan needs a labelled dataset; {params.data.path} has no labels.npy"
        )


def build(params: TrainParams, spec: DataSpec) -> Nets:
    m = params.model
    assert spec.num_classes
    return {
        "G": ConditionalGenerator(
            m.latent_dim,
            spec.num_classes,
            m.embed_dim,
            channels=spec.channels,
            image_size=spec.image_size,
            width=m.width,
        ),
        "D": ProjectionDiscriminator(
            spec.num_classes,
            sn=m.spectral_norm,
            channels=spec.channels,
            image_size=spec.image_size,
            width=m.width,
            norm=m.d_norm or "batch",
        ),
    }


def phases(params: TrainParams, spec: DataSpec) -> list[Phase]:
    return single_pair_phases(FAMILY, params, spec)


class CGANModel(FamilyOptions):
    """cGAN's own ``model`` keys."""

    embed_dim: int = Field(16, ge=1, description="size of the generator's label embedding")


FAMILY = Family(
    name="cgan",
    description="class-conditional DCGAN: label embedding in G, projection discriminator",
    paper="Mirza & Osindero 2014; Miyato & Koyama 2018 (projection discriminator)",
    build=build,
    phases=phases,
    generate=generate,
    conditional=True,
    default_loss="hinge",
    check=check,
    reads=NET_KEYS | PAIR_LOSS_KEYS,
    options={"model": CGANModel},
)
