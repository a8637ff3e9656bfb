"""Phases shared by the families with one generator ``G`` and one discriminator ``D``.

``G(z, labels)`` maps latents (B, Z) to images (B, C, H, W); ``D(x, labels)`` maps images to
logits (B,). Unconditional networks ignore ``labels`` (it is None).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor, nn

from gan_models.errors import ConfigError
from gan_models.families.base import Batch, DataSpec, Losses, LossFn, Nets, Phase, StepContext
from gan_models.losses import d_loss, g_loss, r1_penalty

if TYPE_CHECKING:
    from gan_models.families.base import Family
    from gan_models.training.params import TrainParams

# The shared loss keys single_pair_phases reads: the objective, critic steps and lazy R1.
PAIR_LOSS_KEYS = frozenset({"loss.type", "loss.n_critic", "loss.r1_gamma", "loss.r1_every"})

# A penalty takes (D, real, fake, labels) and returns an unweighted scalar.
Penalty = Callable[[nn.Module, Tensor, Tensor, Tensor | None], Tensor]


def generate(nets: Nets, z: Tensor, labels: Tensor | None) -> Tensor:
    return nets["G"](z, labels)


def single_pair_phases(
    family: Family,
    params: TrainParams,
    spec: DataSpec,
    *,
    penalty: Penalty | None = None,
    penalty_weight: float = 0.0,
    after_d: Callable[[Nets], None] | None = None,
) -> list[Phase]:
    """D (x n_critic, with an optional per-step penalty), lazy R1 if enabled, then G."""
    kind = family.loss_type(params)
    conditional = family.conditional

    def d_main(nets: Nets, batch: Batch | None, ctx: StepContext) -> Losses:
        assert batch is not None
        real = batch["image"]  # (B, C, H, W)
        labels = batch.get("label") if conditional else None
        fake = nets["G"](ctx.latents(real.shape[0]), labels).detach()  # (B, C, H, W)
        real_logits = nets["D"](real, labels)  # (B,)
        fake_logits = nets["D"](fake, labels)  # (B,)
        out = d_losses(kind, real_logits, fake_logits)
        if penalty is not None and penalty_weight > 0:
            pen = penalty(nets["D"], real, fake, labels)
            out["D/adv"], out["D/penalty"] = out["loss"].detach(), pen.detach()
            out["loss"] = out["loss"] + penalty_weight * pen
        return out

    def d_reg(nets: Nets, batch: Batch | None, ctx: StepContext) -> Losses:
        assert batch is not None
        labels = batch.get("label") if conditional else None
        return lazy_r1(params, lambda x: nets["D"](x, labels), batch["image"])

    def g_main(nets: Nets, batch: Batch | None, ctx: StepContext) -> Losses:
        labels = ctx.labels(ctx.batch_size)
        fake = nets["G"](ctx.latents(ctx.batch_size), labels)  # (B, C, H, W)
        return {"loss": g_loss(kind, nets["D"](fake, labels))}

    d_phase = Phase("D", "D", d_main, repeats=family.n_critic(params), after=after_d)
    return [d_phase, *r1_phase(params, d_reg), Phase("G", "G", g_main, needs_batch=False)]


def d_losses(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Losses:
    """A discriminator phase's objective plus its mean logits on real and fake (logged)."""
    return {
        "loss": d_loss(kind, real_logits, fake_logits),
        "D/real": real_logits.detach().mean(),
        "D/fake": fake_logits.detach().mean(),
    }


def lazy_r1(params: TrainParams, critic: Callable[[Tensor], Tensor], real: Tensor) -> Losses:
    """R1 on real images, scaled by its interval to keep the effective weight (lazy
    regularisation, StyleGAN2)."""
    r1 = r1_penalty(critic, real)
    loss = 0.5 * params.loss.r1_gamma * params.loss.r1_every * r1
    return {"loss": loss, "D/r1": r1.detach()}


def r1_phase(params: TrainParams, d_reg: LossFn) -> list[Phase]:
    """The ``Dreg`` phase every ``loss.r1_every`` steps when ``loss.r1_gamma`` > 0, else none."""
    if params.loss.r1_gamma <= 0:
        return []
    return [Phase("Dreg", "D", d_reg, every=params.loss.r1_every)]


def require_power_of_two(params: TrainParams, spec: DataSpec) -> None:
    s = spec.image_size
    if s < 8 or s & (s - 1):
        raise ConfigError(
            f"data.image_size: {params.model.family} needs a power of two >= 8 "
            f"(8, 16, 32, 64, ...), got {s}"
        )
