"""WGAN: a critic estimating the Wasserstein-1 distance, Lipschitz by weight clipping.

Arjovsky et al. 2017: n_critic = 5 critic steps per generator step, weights clipped to
[-c, c] after each critic step, RMSProp (the params presets choose it). The networks are DCGAN's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from gan_models.families.base import DataSpec, Family, FamilyOptions, Nets, Phase
from gan_models.families.common import (
    PAIR_LOSS_KEYS,
    generate,
    require_power_of_two,
    single_pair_phases,
)
from gan_models.families.dcgan import NET_KEYS, build_pair

if TYPE_CHECKING:
    from gan_models.training.params import TrainParams


def build(params: TrainParams, spec: DataSpec) -> Nets:
    return build_pair(params, spec, "batch")


def phases(params: TrainParams, spec: DataSpec) -> list[Phase]:
    bound = params.loss.clip

    @torch.no_grad()
    def clip_weights(nets: Nets) -> None:
        for p in nets["D"].parameters():
            p.clamp_(-bound, bound)

    return single_pair_phases(FAMILY, params, spec, after_d=clip_weights)


class WGANLoss(FamilyOptions):
    """WGAN's own ``loss`` keys."""

    clip: float = Field(0.01, gt=0, description="critic weights are clipped to [-clip, clip]")


# What WGAN-GP shares with WGAN: the objective, 5 critic steps per G step, DCGAN's networks.
WASSERSTEIN_CRITIC: dict[str, Any] = {
    "default_loss": "wasserstein",
    "default_n_critic": 5,
    "allowed_losses": ("wasserstein",),
    "check": require_power_of_two,
    "reads": NET_KEYS | PAIR_LOSS_KEYS,
}

FAMILY = Family(
    name="wgan",
    description="Wasserstein critic with weight clipping, n_critic=5",
    paper="Arjovsky et al. 2017, Wasserstein GAN",
    build=build,
    phases=phases,
    generate=generate,
    options={"loss": WGANLoss},
    **WASSERSTEIN_CRITIC,
)
