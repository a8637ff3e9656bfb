"""CycleGAN: unpaired image-to-image translation with cycle consistency (Zhu et al. 2017).

Two ResNet generators translate between domains ``a`` and ``b`` (``G_AB: a -> b``,
``G_BA: b -> a``); two PatchGAN discriminators judge each domain (``D_A`` real a vs G_BA(b),
``D_B`` real b vs G_AB(a)). The generator loss is the LSGAN objective both ways plus
cycle consistency ``|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1`` (weight
``loss.cycle_weight``, 10) and identity ``|G_AB(b) - b|_1 + |G_BA(a) - a|_1`` (weight
``loss.identity_weight * loss.cycle_weight``, 0.5 x 10 = 5). The discriminators see fakes drawn
from a history of ``loss.pool_size`` (50) past fakes (Shrivastava et al. 2017).

As in the reference implementation, one step is G first, then D on the fakes that G made (through
the history buffer), all on the same batch of real images. The adversarial terms are the
project's objectives (``gan_models.losses``); for LSGAN the generator term is Mao et al.'s
``0.5 * (D(G(x)) - 1)^2``, half the plain MSE the reference code uses.

Networks: ``nets["G"]`` holds both generators (``G.G_AB``, ``G.G_BA``) and a small bank of real
``a`` inputs for sampling; ``D_A``, ``D_B``; ``history`` holds the two fake buffers as module
buffers, so they are part of every checkpoint and a resumed run is exact. Both generators sit
in one module so that the generator EMA, ``generator.safetensors`` and the sampling code, which
all work on ``nets["G"]``, cover the pair; the optimizer group ``G`` steps both, ``D`` steps
``D_A`` and ``D_B``.

Sampling: the "latent" of a translation family is its input image. ``generate(nets, x)`` with
x (N, C_a, H, W) translates domain-a images to domain b. :func:`sample_inputs` (the family's
``sample_inputs`` hook) draws seeded real inputs from a dataset: the trainer's sample grids,
``ganops sample`` and evaluation translate those and show each input next to its output. Without
a dataset (a registered model elsewhere), 2-D latents (N, Z) pick real inputs remembered from
training (see :class:`InputBank`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from gan_models.data.format import ImageSet
from gan_models.data.pairing import split_counterparts
from gan_models.data.splits import (
    dataset_name,
    load_unpaired_split,
    open_unpaired_split,
    to_model_range,
)
from gan_models.errors import ConfigError, GanopsError
from gan_models.families.base import (
    Batch,
    DataSpec,
    EvaluationPlan,
    Family,
    FamilyOptions,
    Losses,
    Nets,
    Phase,
    StepContext,
)
from gan_models.losses import d_loss, g_loss
from gan_models.metrics.image_to_image import translation_metrics
from gan_models.metrics.paired_translation import paired_translation_metrics
from gan_models.metrics.reference import reference_stats
from gan_models.utils.batch_shard import current as current_shard
from gan_models.utils.batch_shard import gather

if TYPE_CHECKING:
    from gan_models.metrics.config import EvaluateParams
    from gan_models.metrics.extractor import FeatureExtractor
    from gan_models.training.params import TrainParams

DEFAULT_RES_BLOCKS = 6  # the paper's choice for 128 px; 9 for 256 px
BANK_SIZE = 16  # real inputs kept for sampling without the dataset


# Real inputs seen in training, kept (as buffers, so in checkpoints and generator.safetensors) so
# that a translation or super-resolution run can draw sample grids without its dataset.
class InputBank(nn.Module):
    def __init__(self, channels: int, size: int, capacity: int = BANK_SIZE):
        super().__init__()
        self.register_buffer("images", torch.zeros(capacity, channels, size, size))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._full = False  # avoids a device sync per step once the bank is full

    @torch.no_grad()
    def remember(self, x: Tensor) -> None:
        """Store the first images of ``x`` (B, C, H, W) until the bank is full."""
        if self._full:
            return
        x = gather(x)  # a data-parallel run keeps the global batch's first images, as one process
        n, cap = int(self.count), self.images.shape[0]
        k = min(cap - n, x.shape[0])
        if k > 0:
            self.images[n : n + k] = x[:k].detach().to(self.images.dtype)
            self.count.fill_(n + k)
        self._full = n + k >= cap

    def pick(self, z: Tensor) -> Tensor:
        """Inputs (N, C, H, W) chosen by latents z (N, Z): index floor(Phi(z_0) * count)."""
        n = int(self.count)
        if n == 0:
            raise GanopsError(
                "this generator translates images and has no stored inputs yet (it has not "
                "trained a step); pass input images instead of latents"
            )
        # Phi(z_0) is uniform on (0, 1) for z ~ N(0, I): each seed picks a stored input.
        u = torch.special.ndtr(z[:, 0].float())  # (N,)
        idx = (u * n).long().clamp_(0, n - 1)
        return self.images[idx.to(self.images.device)]  # (N, C, H, W)


# History of generated images (Shrivastava et al. 2017), the discriminator's view of past fakes.
class ImagePool(nn.Module):
    def __init__(self, size: int, channels: int, image_size: int):
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, channels, image_size, image_size))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, x: Tensor) -> Tensor:
        """Fakes (B, C, H, W) to show D: each new fake, or with p=0.5 a stored one it replaces.

        Same semantics as the reference loop over the batch (an image whose slot an earlier image
        of the batch took gets that image), vectorised; random draws use the global (trainer's)
        RNG, so the buffer's evolution is reproducible and checkpointed. In a data-parallel run
        every rank queries with the global batch (:func:`gather`), so that all hold the history
        one process would hold, and keeps its own rows of the answer.
        """
        if self.size == 0:
            return x
        local = x.shape[0]
        return current_shard().take(self._query(gather(x)), local)

    def _query(self, x: Tensor) -> Tensor:
        x = x.detach().to(self.images.dtype)
        out = x.clone()
        n = int(self.count)
        k = min(x.shape[0], self.size - n)  # while filling, fakes go in and come out unchanged
        if k > 0:
            self.images[n : n + k] = x[:k]
            self.count.fill_(n + k)
        rest = x[k:]  # (M, C, H, W)
        m = rest.shape[0]
        if m == 0:
            return out
        swap = torch.rand(m, device=x.device) < 0.5  # (M,)
        slot = torch.randint(0, self.size, (m,), device=x.device)  # (M,)
        i = torch.arange(m, device=x.device)
        same = (slot[:, None] == slot[None, :]) & swap[None, :]  # [i, j]: j writes i's slot
        earlier = same & (i[None, :] < i[:, None])
        later = same & (i[None, :] > i[:, None])
        prev = torch.where(earlier, i[None, :], -1).amax(1)  # (M,) last earlier writer or -1
        stored = torch.where(
            (prev >= 0)[:, None, None, None], rest[prev.clamp(min=0)], self.images[slot]
        )  # (M, C, H, W)
        out[k:] = torch.where(swap[:, None, None, None], stored, rest)
        last = swap & ~later.any(1)  # the final writer of each slot
        self.images[slot[last]] = rest[last]
        return out


# The two fake histories, one per discriminator; a module so they travel with the checkpoint.
class FakeHistory(nn.Module):
    def __init__(self, size: int, spec: DataSpec):
        super().__init__()
        self.a = ImagePool(size, _channels_a(spec), spec.image_size)
        self.b = ImagePool(size, spec.channels, spec.image_size)


# Reflection padding built from slices: its backward is deterministic on CUDA, unlike
# nn.ReflectionPad2d's, so ``train.deterministic: true`` works on a GPU too.
class ReflectPad(nn.Module):
    def __init__(self, p: int):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        p = self.p
        x = torch.cat([x[..., 1 : p + 1].flip(-1), x, x[..., -p - 1 : -1].flip(-1)], -1)
        return torch.cat([x[..., 1 : p + 1, :].flip(-2), x, x[..., -p - 1 : -1, :].flip(-2)], -2)


# ResNet block of the generator (He et al. 2016; Johnson et al. 2016), reflection padding.
class ResnetBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            ReflectPad(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
            nn.ReLU(True),
            ReflectPad(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)  # (B, ch, H, W)


# CycleGAN generator (Johnson et al. 2016): c7s1-w, d2w, d4w, R4w x n, u2w, uw, c7s1-C, tanh.
class ResnetGenerator(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, width: int, n_blocks: int):
        super().__init__()
        layers: list[nn.Module] = [
            ReflectPad(3),
            nn.Conv2d(in_ch, width, 7),
            nn.InstanceNorm2d(width),
            nn.ReLU(True),
        ]
        ch = width
        for _ in range(2):  # H -> H/4
            layers += [nn.Conv2d(ch, ch * 2, 3, 2, 1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_blocks)]
        for _ in range(2):  # H/4 -> H
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1),
                nn.InstanceNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [ReflectPad(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, in_ch, H, W) -> (B, out_ch, H, W)


# Both generators and the bank of real domain-a inputs used for sampling.
class CycleGenerators(nn.Module):
    def __init__(self, spec: DataSpec, width: int, n_blocks: int):
        super().__init__()
        c_a, c_b = _channels_a(spec), spec.channels
        self.G_AB = ResnetGenerator(c_a, c_b, width, n_blocks)
        self.G_BA = ResnetGenerator(c_b, c_a, width, n_blocks)
        self.bank = InputBank(c_a, spec.image_size)

    def forward(self, a: Tensor) -> Tensor:
        return self.G_AB(a)  # (B, C_a, H, W) -> (B, C_b, H, W)


# PatchGAN discriminator (Isola et al. 2017): one logit per overlapping patch (70x70 at 256 px).
class PatchDiscriminator(nn.Module):
    def __init__(self, channels: int, image_size: int, width: int):
        super().__init__()
        # Three stride-2 convolutions as in the paper, fewer for small images so >= 2x2 patches.
        n_layers = max(1, min(3, int(math.log2(image_size)) - 3))
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(width * prev, width * mult, 4, stride, 1),
                nn.InstanceNorm2d(width * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(width * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)  # (B, C, H, W) -> (B, patches)


def _channels_a(spec: DataSpec) -> int:
    return spec.input_channels or spec.channels


def build(params: TrainParams, spec: DataSpec) -> Nets:
    m = params.model
    blocks = m.res_blocks
    return {
        "G": CycleGenerators(spec, m.width, blocks),
        "D_A": PatchDiscriminator(_channels_a(spec), spec.image_size, m.width),
        "D_B": PatchDiscriminator(spec.channels, spec.image_size, m.width),
        "history": FakeHistory(params.loss.pool_size, spec),
    }


def phases(params: TrainParams, spec: DataSpec) -> list[Phase]:
    """G (adversarial both ways + cycle + identity), then D on the fakes through the history."""
    kind = FAMILY.loss_type(params)
    lam_cyc = params.loss.cycle_weight
    lam_idt = params.loss.identity_weight * lam_cyc
    handoff: dict[str, Tensor] = {}  # this step's real and fake images, from G's phase to D's

    def g_main(nets: Nets, batch: Batch | None, ctx: StepContext) -> Losses:
        assert batch is not None
        a, b = batch["a"], batch["b"]  # (B, C_a, H, W), (B, C_b, H, W)
        G = nets["G"]
        G.bank.remember(a)
        fake_b, fake_a = G.G_AB(a), G.G_BA(b)  # (B, C_b, H, W), (B, C_a, H, W)
        adv = g_loss(kind, nets["D_B"](fake_b)) + g_loss(kind, nets["D_A"](fake_a))
        cycle = F.l1_loss(G.G_BA(fake_b), a) + F.l1_loss(G.G_AB(fake_a), b)
        loss = adv + lam_cyc * cycle
        out = {"G/adv": adv.detach(), "G/cycle": cycle.detach()}
        if lam_idt > 0:
            identity = F.l1_loss(G.G_AB(b), b) + F.l1_loss(G.G_BA(a), a)
            loss = loss + lam_idt * identity
            out["G/identity"] = identity.detach()
        handoff.update(a=a, b=b, fake_a=fake_a.detach(), fake_b=fake_b.detach())
        return {"loss": loss, **out}

    def d_main(nets: Nets, batch: Batch | None, ctx: StepContext) -> Losses:
        if not handoff:
            raise RuntimeError("cyclegan: the D phase runs after the G phase of the same step")
        a, b = handoff.pop("a"), handoff.pop("b")
        history = nets["history"]
        fake_a = history.a.query(handoff.pop("fake_a"))  # (B, C_a, H, W)
        fake_b = history.b.query(handoff.pop("fake_b"))  # (B, C_b, H, W)
        loss_a = d_loss(kind, nets["D_A"](a), nets["D_A"](fake_a))
        loss_b = d_loss(kind, nets["D_B"](b), nets["D_B"](fake_b))
        return {"loss": loss_a + loss_b, "D/A": loss_a.detach(), "D/B": loss_b.detach()}

    return [Phase("G", "G", g_main), Phase("D", "D", d_main, needs_batch=False)]


@torch.no_grad()
def translate(nets: Nets, images: Tensor, direction: str = "ab") -> Tensor:
    """Translate images (N, C, H, W) in [-1, 1]: ``"ab"`` with G_AB, ``"ba"`` with G_BA."""
    if direction not in ("ab", "ba"):
        raise ConfigError(f"direction: expected 'ab' or 'ba', got {direction!r}")
    G = nets["G"]
    return (G.G_AB if direction == "ab" else G.G_BA)(images)


def generate(nets: Nets, z: Tensor, labels: Tensor | None = None) -> Tensor:
    """Domain-b images (N, C_b, H, W) from domain-a inputs z (N, C_a, H, W).

    A translation family's "latent" is its input image. 2-D latents (N, Z) from
    ``sample_latents`` pick real inputs remembered in training (:meth:`InputBank.pick`), so the
    trainer's sample grid and ``ganops sample`` work until they can pass real inputs.
    """
    G = nets["G"]
    x = z if z.dim() == 4 else G.bank.pick(z)  # (N, C_a, H, W)
    return G.G_AB(x)


def seeded_indices(count: int, n: int, seed: int) -> Tensor:
    """n indices into ``count`` items: a permutation seeded by ``seed``, cycled if n > count."""
    perm = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return perm[torch.arange(n) % count]  # (n,)


def sample_inputs(params: TrainParams, spec: DataSpec, data: ImageSet, n: int, seed: int) -> Tensor:
    """n real domain-a inputs (n, C_a, H, W) in [-1, 1] chosen by ``seed``, for :func:`generate`.

    The family's ``sample_inputs`` hook: the same seed and data always give the same inputs.
    """

    a = data.arrays["a"]
    idx = seeded_indices(a.shape[0], n, seed).numpy()
    return to_model_range(a[idx], spec.image_size)


def check(params: TrainParams, spec: DataSpec) -> None:
    if spec.kind not in ("unpaired", "paired"):
        raise ConfigError(
            f"model.family: cyclegan translates between two domains and needs an unpaired "
            f"dataset (arrays a and b), but {params.data.path} is of kind {spec.kind!r}"
        )
    if spec.input_size not in (None, spec.image_size):
        raise ConfigError(
            f"data.path: cyclegan needs a and b at one size; {params.data.path} has a at "
            f"{spec.input_size} px and b at {spec.image_size} px"
        )
    s = spec.image_size
    if s < 8 or s % 4:
        raise ConfigError(
            f"data.image_size: cyclegan downsamples twice and needs a multiple of 4 that is "
            f">= 8, got {s}"
        )
    if FAMILY.n_critic(params) != 1:
        raise ConfigError(
            f"loss.n_critic: cyclegan updates D once per step on G's fakes, got "
            f"{params.loss.n_critic}"
        )
    if params.loss.identity_weight > 0 and _channels_a(spec) != spec.channels:
        raise ConfigError(
            f"loss.identity_weight: the identity loss needs domains with equal channels, got "
            f"{_channels_a(spec)} (a) and {spec.channels} (b); set it to 0"
        )


class CycleGANModel(FamilyOptions):
    """CycleGAN's own ``model`` keys."""

    res_blocks: int = Field(DEFAULT_RES_BLOCKS, ge=0, description="residual blocks per generator")


class CycleGANLoss(FamilyOptions):
    """CycleGAN's own ``loss`` keys."""

    cycle_weight: float = Field(10.0, ge=0, description="cycle-consistency (L1) weight")
    identity_weight: float = Field(
        0.5, ge=0, description="identity (L1) weight as a fraction of cycle_weight (0.5 -> 5)"
    )
    pool_size: int = Field(50, ge=0, description="history of generated images shown to D (0 = off)")


def evaluation(
    params: TrainParams,
    spec: DataSpec,
    nets: Nets,
    extractor: FeatureExtractor,
    evaluate: EvaluateParams,
) -> EvaluationPlan:
    """The family's ``evaluation`` hook: translations of held-out inputs.

    The metrics table scores the test split's a -> b translations (each input once) against b's
    train and test splits; ``translation`` adds both directions' FID, each next to its floor and
    the untranslated inputs' FID, and the cycle errors (:func:`translation_metrics`). When the
    split keeps what each image shows (:mod:`gan_models.data.pairing`), ``paired_translation``
    scores each direction's translations against the true counterparts, next to the
    untranslated inputs (:func:`paired_translation_metrics`).
    """
    root, size = Path(params.data.path), spec.image_size
    # The train splits only give reference statistics: read from disk a batch at a time. The
    # held-out inputs are translated whole.
    train_ab = open_unpaired_split(root, "train", size)
    test_ab = load_unpaired_split(root, "test", size)
    name = dataset_name(params)
    refs = {
        k: reference_stats(
            train_ab[k],
            extractor,
            split=f"{name}:{k}/train",
            cache_dir=evaluate.cache_dir,
            max_features=evaluate.max_reference_features,
        )
        for k in ("a", "b")
    }
    translation = translation_metrics(
        nets,
        torch.from_numpy(test_ab["a"]),
        torch.from_numpy(test_ab["b"]),
        extractor=extractor,
        ref_a=refs["a"],
        ref_b=refs["b"],
    )
    metrics = {"translation": translation}
    # A set that keeps what each image shows (twemoji-noto's codepoints): each held-out input's
    # true counterpart in the other domain, at the data's size and preprocessing.
    counter = split_counterparts(root, "test")
    if counter is not None:
        pairs = {  # direction -> (inputs, their counterparts), (N, C, H, W) in [-1, 1] each
            f"{k}_to_{other}": (
                torch.from_numpy(test_ab[k]),
                to_model_range(counter[k].images, size),
            )
            for k, other in (("a", "b"), ("b", "a"))
        }
        metrics["paired_translation"] = paired_translation_metrics(
            nets,
            pairs,
            lineage={"a_to_b": counter["a"].lineage(), "b_to_a": counter["b"].lineage()},
        )
    return EvaluationPlan(
        real_train=ImageSet({"images": train_ab["b"]}, None, {"name": f"{name}:b/train"}),
        real_test=ImageSet({"images": test_ab["b"]}, None, {"name": f"{name}:b/test"}),
        inputs=ImageSet({"a": test_ab["a"]}, None, {"kind": "unpaired"}),
        max_samples=len(test_ab["a"]),
        metrics=metrics,
    )


FAMILY = Family(
    name="cyclegan",
    description="two ResNet generators, PatchGAN critics, LSGAN + cycle + identity losses",
    paper="Zhu et al. 2017, Unpaired Image-to-Image Translation using Cycle-Consistent "
    "Adversarial Networks",
    build=build,
    phases=phases,
    generate=generate,
    optim_groups={"G": ("G",), "D": ("D_A", "D_B")},
    ema_nets=("G",),
    batch_kind="unpaired",
    default_loss="lsgan",
    allowed_losses=("lsgan", "nonsaturating", "hinge"),
    check=check,
    sample_inputs=sample_inputs,
    evaluation=evaluation,
    # No latents (its input is an image), instance norm in fixed places, one D step per step,
    # no R1.
    reads=frozenset({"model.width", "loss.type"}),
    options={"model": CycleGANModel, "loss": CycleGANLoss},
)
