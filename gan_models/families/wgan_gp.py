"""WGAN-GP: the Wasserstein critic made Lipschitz by a gradient penalty on interpolates.

Gulrajani et al. 2017: penalty weight 10, n_critic = 5, Adam(1e-4, betas=(0, 0.9)) in the
presets, and no batch norm in the critic (the penalty is per sample), layer norm instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field
from torch import Tensor, nn

from gan_models.families.base import DataSpec, Family, FamilyOptions, Nets, Phase
from gan_models.families.common import (
    generate,
    single_pair_phases,
)
from gan_models.families.dcgan import build_pair
from gan_models.families.wgan import WASSERSTEIN_CRITIC
from gan_models.losses import gradient_penalty

if TYPE_CHECKING:
    from gan_models.training.params import TrainParams


def build(params: TrainParams, spec: DataSpec) -> Nets:
    return build_pair(params, spec, "layer")


def _penalty(critic: nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
    return gradient_penalty(lambda x: critic(x, labels), real, fake)


def phases(params: TrainParams, spec: DataSpec) -> list[Phase]:
    return single_pair_phases(
        FAMILY, params, spec, penalty=_penalty, penalty_weight=params.loss.gp_weight
    )


class WGANGPLoss(FamilyOptions):
    """WGAN-GP's own ``loss`` keys."""

    gp_weight: float = Field(10.0, ge=0, description="gradient penalty weight (lambda)")


FAMILY = Family(
    name="wgan-gp",
    description="Wasserstein critic with gradient penalty, layer-norm critic, n_critic=5",
    paper="Gulrajani et al. 2017, Improved Training of Wasserstein GANs",
    build=build,
    phases=phases,
    generate=generate,
    options={"loss": WGANGPLoss},
    **WASSERSTEIN_CRITIC,
)
