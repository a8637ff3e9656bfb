"""SRGAN: single-image super-resolution with an adversarial loss (Ledig et al. 2017).

The generator (SRResNet) runs residual blocks at the low resolution and upsamples with
sub-pixel convolutions (Shi et al. 2016), x2 per stage, to ``model.scale`` (2 or 4) times the
input size. The discriminator is the paper's VGG-style stack of strided 3x3 convolutions with a
dense head. The generator loss is ``loss.content_weight * content + loss.adv_weight * adversarial``
with ``adv_weight`` 1e-3 by default, and the content term one of (``loss.content``):

- ``pixel``: MSE between the super-resolved and the high-resolution image (the default);
- ``ssim``: pixel MSE plus ``1 - SSIM`` (Gaussian window, :mod:`gan_models.metrics.ssim`);
  needs >= 11 px;
- ``feature``: MSE between feature maps of the project's domain classifier
  (``loss.content_network``, trained by ``gan_models.metrics.domain_classifier``): its
  convolutional stages up to the last activation before pooling, the analogue of SRGAN's
  VGG feature loss for data that ImageNet features describe poorly, and available offline.

Pairs: from a ``paired`` dataset (``a`` low-res at its native size, ``b`` high-res at
``data.image_size``), or made inside the family from any ``images`` dataset by downsampling the
high-res image by ``scale`` (bicubic, antialiased), as the paper does.

Sampling: the "latent" is the low-res input. ``generate(nets, x)`` with x (N, C, h, w) returns
(N, C, h * scale, w * scale). :func:`sample_inputs` (the family's ``sample_inputs`` hook) draws
seeded low-res inputs from a dataset, which sample grids show next to their outputs; without a
dataset, 2-D latents pick low-res inputs remembered in training.
Not done here: the paper's SRResNet (MSE-only) pre-training before the adversarial phase; run
with ``loss.adv_weight=0`` first and start from those weights to reproduce it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from gan_models.data.splits import load_split, open_split, to_model_range
from gan_models.errors import ConfigError
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
from gan_models.families.common import d_losses
from gan_models.families.cyclegan import InputBank, seeded_indices
from gan_models.layers import maybe_sn, norm2d
from gan_models.losses import g_loss
from gan_models.metrics.image_to_image import super_resolution_metrics
from gan_models.metrics.ssim import gaussian_window, psnr, ssim

if TYPE_CHECKING:
    from gan_models.data.format import ImageSet
    from gan_models.metrics.config import EvaluateParams
    from gan_models.metrics.extractor import FeatureExtractor
    from gan_models.training.params import TrainParams

DEFAULT_RES_BLOCKS = 16  # the paper's B
DEFAULT_ADV_WEIGHT = 1e-3  # the paper's weight of the adversarial term


# SRResNet residual block (Ledig et al. 2017): conv-BN-PReLU-conv-BN plus the identity.
class ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1),
            nn.BatchNorm2d(ch),
            nn.PReLU(ch),
            nn.Conv2d(ch, ch, 3, 1, 1),
            nn.BatchNorm2d(ch),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)  # (B, ch, h, w)


# SRGAN generator (SRResNet, Ledig et al. 2017) with sub-pixel upsampling (Shi et al. 2016).
class SRResNet(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, width: int, n_blocks: int, scale: int, input_size: int
    ):
        super().__init__()
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(in_ch, width, 9, 1, 4), nn.PReLU(width))
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(n_blocks)])
        self.post = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width))
        up: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            up += [nn.Conv2d(width, width * 4, 3, 1, 1), nn.PixelShuffle(2), nn.PReLU(width)]
        self.upsample = nn.Sequential(*up)
        self.tail = nn.Conv2d(width, out_ch, 9, 1, 4)
        self.bank = InputBank(in_ch, input_size)

    def forward(self, x: Tensor) -> Tensor:
        h = self.head(x)  # (B, W, h, w)
        h = h + self.post(self.blocks(h))  # long skip over the residual blocks
        return torch.tanh(self.tail(self.upsample(h)))  # (B, C, h * s, w * s)


# SRGAN discriminator (Ledig et al. 2017): 3x3 convs, stride 2 every other layer with doubling
# channels, BN and LeakyReLU, then dense(16 * width) and a logit. Four strided stages at 96 px;
# fewer for small images so the last map stays >= 4 px.
class SRDiscriminator(nn.Module):
    def __init__(
        self, channels: int, image_size: int, width: int, norm: str = "batch", sn: bool = False
    ):
        super().__init__()
        n_down = max(1, min(4, int(math.log2(image_size)) - 2))
        layers: list[nn.Module] = []
        c_in, size = channels, image_size
        for i in range(n_down):
            c = width * 2**i
            first = i == 0
            layers += [
                maybe_sn(nn.Conv2d(c_in, c, 3, 1, 1, bias=first or norm == "none"), sn),
                nn.Identity() if first else norm2d(norm, c),
                nn.LeakyReLU(0.2, True),
                maybe_sn(nn.Conv2d(c, c, 3, 2, 1, bias=norm == "none"), sn),
                norm2d(norm, c),
                nn.LeakyReLU(0.2, True),
            ]
            c_in, size = c, (size + 1) // 2
        self.body = nn.Sequential(*layers)  # (B, c_in, size, size)
        self.head = nn.Sequential(
            nn.Flatten(),
            maybe_sn(nn.Linear(c_in * size * size, 16 * width), sn),
            nn.LeakyReLU(0.2, True),
            maybe_sn(nn.Linear(16 * width, 1), sn),
        )

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.head(self.body(x)).flatten()  # (B,)


def downsample(hr: Tensor, scale: int) -> Tensor:
    """Low-res inputs (B, C, H / scale, W / scale): bicubic, antialiased, clamped to [-1, 1]."""
    h, w = hr.shape[-2] // scale, hr.shape[-1] // scale
    lr = F.interpolate(hr, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    return lr.clamp(-1.0, 1.0)


def _input_shape(params: TrainParams, spec: DataSpec) -> tuple[int, int]:
    """(channels, size) of the generator's low-res input."""
    if spec.kind == "paired":
        return spec.input_channels or spec.channels, spec.input_size or spec.image_size
    return spec.channels, spec.image_size // params.model.scale


def build(params: TrainParams, spec: DataSpec) -> Nets:
    m = params.model
    in_ch, in_size = _input_shape(params, spec)
    blocks = m.res_blocks
    return {
        "G": SRResNet(in_ch, spec.channels, m.width, blocks, m.scale, in_size),
        "D": SRDiscriminator(
            spec.channels, spec.image_size, m.width, m.d_norm or "batch", m.spectral_norm
        ),
    }


def _feature_network(path: str, channels: int) -> tuple[nn.Module, tuple[int, int]]:
    """Frozen convolutional stages of a saved domain classifier, and its input size (H, W)."""
    from gan_models.metrics.domain_classifier import load_domain_classifier

    model = load_domain_classifier(path).model
    if model.arch.in_channels != channels:
        raise ConfigError(
            f"loss.content_network: {path} takes {model.arch.in_channels}-channel images, the "
            f"data has {channels} channels"
        )
    body = model.body[:-1]  # drop the last max-pool: activations of the last conv stage
    return body.eval().requires_grad_(False), tuple(model.arch.input_size)


def content_loss(params: TrainParams, spec: DataSpec) -> Callable[[Tensor, Tensor], Tensor]:
    """The content term ``(sr, hr) -> scalar`` that ``loss.content`` names."""
    kind = params.loss.content
    if kind == "pixel":
        return lambda sr, hr: F.mse_loss(sr.float(), hr.float())
    if kind == "ssim":
        return lambda sr, hr: F.mse_loss(sr.float(), hr.float()) + (1 - ssim(sr, hr)).mean()
    assert params.loss.content_network is not None  # checked in ``check``
    net, size = _feature_network(params.loss.content_network, spec.channels)

    def features(x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != size:  # as the classifier is fed at evaluation time
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return net.to(x.device)(x)  # (B, 2c, H/2, W/2), c = classifier width

    return lambda sr, hr: F.mse_loss(features(sr).float(), features(hr).float())


def phases(params: TrainParams, spec: DataSpec) -> list[Phase]:
    """D on (high-res, super-resolved), then G: content + weighted adversarial."""
    kind = FAMILY.loss_type(params)
    scale = params.model.scale
    adv_w = params.loss.adv_weight
    content_w = params.loss.content_weight
    content = content_loss(params, spec)

    def pair(batch: Batch | None) -> tuple[Tensor, Tensor]:
        assert batch is not None
        if "image" in batch:
            hr = batch["image"]  # (B, C, H, W)
            return downsample(hr, scale), hr  # (B, C, H/s, W/s), (B, C, H, W)
        return batch["a"], batch["b"]

    def d_main(nets: Nets, batch: Batch | None, ctx: StepContext) -> Losses:
        lr, hr = pair(batch)
        sr = nets["G"](lr).detach()  # (B, C, H, W)
        return d_losses(kind, nets["D"](hr), nets["D"](sr))  # logits (B,)

    def g_main(nets: Nets, batch: Batch | None, ctx: StepContext) -> Losses:
        lr, hr = pair(batch)
        nets["G"].bank.remember(lr)
        sr = nets["G"](lr)  # (B, C, H, W)
        c = content(sr, hr)
        adv = g_loss(kind, nets["D"](sr))
        return {
            "loss": content_w * c + adv_w * adv,
            "G/content": c.detach(),
            "G/adv": adv.detach(),
            "G/psnr": psnr(sr.detach().float(), hr.float()).mean(),
        }

    return [
        Phase("D", "D", d_main, repeats=FAMILY.n_critic(params)),
        Phase("G", "G", g_main),
    ]


def generate(nets: Nets, z: Tensor, labels: Tensor | None = None) -> Tensor:
    """Super-resolve low-res inputs z (N, C, h, w) to (N, C, h * scale, w * scale).

    2-D latents (N, Z), as the trainer's grid passes them, pick low-res inputs remembered in
    training (:meth:`gan_models.families.cyclegan.InputBank.pick`).
    """
    G = nets["G"]
    x = z if z.dim() == 4 else G.bank.pick(z)  # (N, C, h, w)
    return G(x)


def sample_inputs(params: TrainParams, spec: DataSpec, data: ImageSet, n: int, seed: int) -> Tensor:
    """n real low-res inputs (n, C, h, w) in [-1, 1] chosen by ``seed``, for :func:`generate`:
    ``a`` of a paired set, or images resized to ``data.image_size`` and downsampled by scale."""

    key = "a" if data.kind == "paired" else "images"
    arr = data.arrays[key]
    idx = seeded_indices(arr.shape[0], n, seed).numpy()
    if key == "a":
        return to_model_range(arr[idx], None)
    return downsample(to_model_range(arr[idx], spec.image_size), params.model.scale)


def check(params: TrainParams, spec: DataSpec) -> None:
    s, scale = spec.image_size, params.model.scale
    if spec.kind == "paired":
        if (spec.input_size or 0) * scale != s:
            raise ConfigError(
                f"model.scale: {params.data.path} pairs {spec.input_size} px inputs with targets "
                f"resized to data.image_size={s}; scale {scale} needs data.image_size="
                f"{(spec.input_size or 0) * scale}"
            )
    elif spec.kind == "images":
        if s % scale or s // scale < 2:
            raise ConfigError(
                f"data.image_size: srgan makes {scale}x smaller inputs from the images, so the "
                f"size must be a multiple of model.scale={scale} and at least {2 * scale}, got {s}"
            )
    else:
        raise ConfigError(
            f"model.family: srgan needs a paired dataset or plain images to downsample, but "
            f"{params.data.path} is of kind {spec.kind!r}"
        )
    window = gaussian_window().shape[-1]
    if params.loss.content == "ssim" and s < window:
        raise ConfigError(
            f"loss.content: ssim uses an {window} px window and needs data.image_size >= "
            f"{window}, got {s}; use pixel"
        )
    if params.loss.content == "feature" and not params.loss.content_network:
        raise ConfigError(
            "loss.content_network: loss.content=feature needs the directory of a domain "
            "classifier (model.safetensors + card.json)"
        )


class SRGANModel(FamilyOptions):
    """SRGAN's own ``model`` keys."""

    res_blocks: int = Field(DEFAULT_RES_BLOCKS, ge=0, description="residual blocks of SRResNet")
    scale: Literal[2, 4] = Field(4, description="upscaling factor (sub-pixel x2 stages)")


class SRGANLoss(FamilyOptions):
    """SRGAN's own ``loss`` keys."""

    content: Literal["pixel", "ssim", "feature"] = Field(
        "pixel",
        description="content loss: pixel MSE, pixel MSE + (1 - SSIM), or MSE on features of "
        "the domain classifier at content_network",
    )
    content_weight: float = Field(1.0, ge=0, description="content loss weight")
    content_network: str | None = Field(
        None, description="domain classifier directory for content=feature"
    )
    adv_weight: float = Field(
        DEFAULT_ADV_WEIGHT, ge=0, description="adversarial weight (the paper's 1e-3)"
    )


def evaluation(
    params: TrainParams,
    spec: DataSpec,
    nets: Nets,
    extractor: FeatureExtractor,
    evaluate: EvaluateParams,
) -> EvaluationPlan:
    """The family's ``evaluation`` hook: super-resolution of the held-out images.

    Each test image is super-resolved once from its bicubic downsampling (what
    :func:`sample_inputs` makes of it); ``super_resolution`` adds PSNR and SSIM of the generator
    and of bicubic upsampling (:func:`super_resolution_metrics`).
    """
    # The train split only gives reference statistics: read from disk a batch at a time.
    train = open_split(params.data.path, "train", spec.image_size)
    test = load_split(params.data.path, "test", spec.image_size)
    hr = torch.from_numpy(test.images)  # (N, C, H, W)
    lr = downsample(hr, params.model.scale)
    return EvaluationPlan(
        real_train=train,
        real_test=test,
        inputs=test,
        max_samples=len(test.images),
        metrics={"super_resolution": super_resolution_metrics(nets, lr, hr)},
    )


FAMILY = Family(
    name="srgan",
    description="super-resolution: SRResNet with sub-pixel upsampling, content + adversarial",
    paper="Ledig et al. 2017, Photo-Realistic Single Image Super-Resolution Using a GAN",
    build=build,
    phases=phases,
    generate=generate,
    batch_kind="paired",
    default_loss="nonsaturating",
    allowed_losses=("nonsaturating", "lsgan", "hinge"),
    check=check,
    sample_inputs=sample_inputs,
    evaluation=evaluation,
    # No latents (its input is the low-res image), no R1.
    reads=frozenset(
        {"model.width", "model.d_norm", "model.spectral_norm", "loss.type", "loss.n_critic"}
    ),
    options={"model": SRGANModel, "loss": SRGANLoss},
)
