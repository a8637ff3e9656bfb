"""StyleGAN2: a style-based generator with weight demodulation (Karras et al. 2019, 2020).

Generator ``G = mapping + synthesis``:

- mapping: pixel-normalised z through ``model.mapping_layers`` equalised-lr dense layers
  (lr multiplier 0.01) to w; ``w_avg`` is an EMA buffer of w (beta 0.995) updated while training,
  the centre that truncation pulls towards;
- synthesis: a learned constant 4x4 input, then per resolution two 3x3 modulated convolutions
  with weight demodulation (the first upsamples x2), per-layer noise with a learned strength, and
  a toRGB (1x1 modulated, not demodulated) whose outputs are upsampled and summed: the skip
  generator that replaces progressive growing. ``num_ws = 2 log2(R) - 2`` style inputs, the last
  toRGB of a resolution sharing its w with the next resolution's first conv (as in StyleGAN2-ADA).

Discriminator: the residual StyleGAN2 D (fromRGB, residual blocks halving the size with a
1x1 skip, scaled by 1/sqrt(2)), minibatch standard deviation, conv, dense, logit.

Training: non-saturating loss; style-mixing regularisation (probability ``loss.style_mixing``,
0.9: the styles from a random layer on come from a second z); per-layer noise from the trainer's
RNG; lazy R1 on reals every ``loss.r1_every`` (16) steps, scaled by the interval. The path-length
regulariser and the Adam re-parameterisation for lazy intervals are not implemented.

Simplifications: up/downsampling uses a fixed [1, 3, 3, 1] filter for upsampling (a
depthwise transposed convolution) and 2x2 average pooling in D, instead of upfirdn2d kernels.

Sampling: ``generate(nets, z, psi=..., noise=...)`` with truncation ``w = w_avg + psi (w -
w_avg)`` and noise ``const`` (fixed buffers: the same z always gives the same image), ``random``
(seeded by ``noise_seed``) or ``none``; :func:`generate_mixed` mixes two latents' styles.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from gan_models.errors import ConfigError
from gan_models.families.base import (
    Batch,
    DataSpec,
    Family,
    FamilyOptions,
    Losses,
    Nets,
    Phase,
    StepContext,
)
from gan_models.families.common import d_losses, lazy_r1, r1_phase, require_power_of_two
from gan_models.losses import g_loss
from gan_models.utils.batch_shard import current as current_shard
from gan_models.utils.batch_shard import draw, gather_grad, mean_rows

if TYPE_CHECKING:
    from gan_models.training.params import TrainParams

NoiseMode = Literal["const", "random", "none"]
MAPPING_LR_MUL = 0.01  # StyleGAN's reduced learning rate of the mapping network
W_AVG_BETA = 0.995  # decay of the tracked average w
LRELU_GAIN = math.sqrt(2)  # keeps activations at unit variance through leaky ReLU


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


def _channels(res: int, image_size: int, width: int) -> int:
    """Feature maps at resolution ``res``: ``width`` at full size, doubling per halving, <= 8x."""
    return min(width * (image_size // res), 8 * width)


def upsample2d(x: Tensor) -> Tensor:
    """x2 upsampling (B, C, H, W) -> (B, C, 2H, 2W) with the [1, 3, 3, 1] filter of StyleGAN2."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=x.device, dtype=x.dtype)
    k = torch.outer(f, f) / 16  # (4, 4); gain 4 makes up for the inserted zeros
    c = x.shape[1]
    return F.conv_transpose2d(x, k.expand(c, 1, 4, 4), stride=2, padding=1, groups=c)


# Dense layer with equalised learning rate (Karras et al. 2018): N(0, 1) weights scaled at run time.
class EqualLinear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activate: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)  # (B, out)
        return _lrelu(x) if self.activate else x


# Convolution with equalised learning rate (Karras et al. 2018).
class EqualConv2d(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, bias: bool = True, activate: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        return _lrelu(x) if self.activate else x  # (B, out_ch, H, W)


# StyleGAN mapping network (Karras et al. 2019): z -> w, with the tracked average w for truncation.
class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_ws: int, layers: int):
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.net = nn.Sequential(
            *[
                EqualLinear(dims[i], dims[i + 1], lr_mul=MAPPING_LR_MUL, activate=True)
                for i in range(layers)
            ]
        )
        self.num_ws = num_ws
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor, psi: float = 1.0, update_w_avg: bool = False) -> Tensor:
        """Styles (B, num_ws, W) for latents z (B, Z), truncated towards ``w_avg`` by ``psi``."""
        x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)  # pixel norm (B, Z)
        w = self.net(x)  # (B, W)
        if update_w_avg:
            with torch.no_grad():
                # the mean over the global batch of a data-parallel run, as one process's
                self.w_avg.copy_(mean_rows(w.detach().float()).lerp(self.w_avg, W_AVG_BETA))
        if psi != 1:
            w = self.w_avg.to(w.dtype).lerp(w, psi)  # w_avg + psi (w - w_avg)
        return w[:, None, :].expand(-1, self.num_ws, -1)  # (B, num_ws, W)


# Modulated convolution with weight demodulation (Karras et al. 2020, StyleGAN2 Sec. 2.2).
class ModulatedConv2d(nn.Module):
    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        w_dim: int,
        demodulate: bool = True,
        up: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.weight_gain = 1 / math.sqrt(in_ch * kernel * kernel)
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)  # styles start at 1
        self.demodulate = demodulate
        self.up = up
        self.padding = kernel // 2

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        # Modulate the activations rather than the weights (StyleGAN2-ADA's non-fused path):
        # (x * s) conv W, then * d, equals x conv (W * s * d) per sample, but runs as one shared
        # convolution: three times faster on CPU than the per-sample grouped convolution.
        s = self.affine(w)  # (B, I)
        weight = self.weight * self.weight_gain  # (O, I, k, k)
        if self.up:
            x = upsample2d(x)  # (B, I, 2H, 2W)
        out = F.conv2d(
            x * s[:, :, None, None].to(x.dtype), weight.to(x.dtype), padding=self.padding
        )
        if self.demodulate:
            # d_o = 1 / sqrt(sum_{i,k} (W_oik s_i)^2), from the squared weights summed over k
            d = torch.rsqrt(s.float().pow(2) @ weight.float().pow(2).sum((2, 3)).T + 1e-8)  # (B, O)
            out = out * d[:, :, None, None].to(out.dtype)
        return out  # (B, O, H, W)


# Modulated 3x3 conv + per-pixel noise with a learned strength + bias + leaky ReLU.
class SynthesisLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        # Fixed noise for sampling: the same z then always gives the same image.
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(
        self, x: Tensor, w: Tensor, noise: NoiseMode, gen: torch.Generator | None = None
    ) -> Tensor:
        x = self.conv(x, w)  # (B, O, R, R)
        b, _, h, wd = x.shape
        if noise == "random":
            if gen is None:  # training: the trainer's RNG on the device (this rank's rows)
                n = draw(lambda m: torch.randn(m, 1, h, wd, device=x.device, dtype=x.dtype), b)
            else:  # seeded sampling: a CPU generator, the same on every device
                n = torch.randn(b, 1, h, wd, generator=gen).to(x)
            x = x + n * self.noise_strength
        elif noise == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        return _lrelu(x + self.bias[None, :, None, None])  # (B, O, R, R)


# toRGB: 1x1 modulated convolution without demodulation, plus a bias.
class ToRGB(nn.Module):
    def __init__(self, in_ch: int, img_ch: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, img_ch, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(img_ch))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]  # (B, C, R, R)


# One resolution of the skip generator: (const or upsampling conv), conv, toRGB added to the image.
class SynthesisBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, img_ch: int):
        super().__init__()
        self.first = resolution == 4
        if self.first:
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
        else:
            self.conv0 = SynthesisLayer(in_ch, out_ch, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, resolution)
        self.torgb = ToRGB(out_ch, img_ch, w_dim)
        self.num_conv = 1 if self.first else 2

    def forward(
        self,
        x: Tensor | None,
        img: Tensor | None,
        ws: Tensor,
        noise: NoiseMode,
        gen: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        # ws (B, num_conv + 1, W): one per conv, the last for toRGB
        if self.first:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)  # (B, O, 4, 4)
        else:
            assert x is not None
            x = self.conv0(x, ws[:, 0], noise, gen)  # (B, O, R, R)
        x = self.conv1(x, ws[:, self.num_conv - 1], noise, gen)  # (B, O, R, R)
        y = self.torgb(x, ws[:, self.num_conv])  # (B, C, R, R)
        img = y if img is None else upsample2d(img) + y.to(img.dtype)
        return x, img


# StyleGAN2 synthesis network with skip connections (Karras et al. 2020, Fig. 7b).
class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, image_size: int, img_ch: int, width: int):
        super().__init__()
        res_list = [2**i for i in range(2, int(math.log2(image_size)) + 1)]
        blocks, prev = [], 0
        for res in res_list:
            ch = _channels(res, image_size, width)
            blocks.append(SynthesisBlock(prev, ch, w_dim, res, img_ch))
            prev = ch
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(b.num_conv for b in blocks) + 1

    def forward(
        self, ws: Tensor, noise: NoiseMode = "const", gen: torch.Generator | None = None
    ) -> Tensor:
        x = img = None
        i = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, i : i + block.num_conv + 1], noise, gen)
            i += block.num_conv  # the toRGB style is the next block's first conv style
        assert img is not None
        return img  # (B, C, R, R)


# StyleGAN2 generator: mapping z -> w, synthesis w -> image.
class StyleGenerator(nn.Module):
    def __init__(self, z_dim: int, image_size: int, img_ch: int, width: int, mapping_layers: int):
        super().__init__()
        self.synthesis = SynthesisNetwork(z_dim, image_size, img_ch, width)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, z_dim, self.num_ws, mapping_layers)
        self.z_dim = z_dim

    def forward(
        self,
        z: Tensor,
        labels: Tensor | None = None,
        psi: float = 1.0,
        noise: NoiseMode = "const",
        gen: torch.Generator | None = None,
    ) -> Tensor:
        return self.synthesis(self.mapping(z, psi), noise, gen)  # (B, Z) -> (B, C, R, R)


def minibatch_stddev(x: Tensor, group: int = 4) -> Tensor:
    """Append the mean std over groups of samples as a feature map (Karras et al. 2018).

    The groups are those of the global batch: a data-parallel rank computes the feature on every
    rank's samples (:func:`gather_grad`) and keeps its own rows, so that D sees what it would
    see in one process."""
    local = x.shape[0]
    x_all = gather_grad(x)  # (B, C, H, W), B = local * ranks
    b, c, h, w = x_all.shape
    g = min(group, b)
    while b % g:  # the largest group size <= ``group`` that divides the batch
        g -= 1
    y = x_all.float().reshape(g, -1, c, h, w)  # (G, B/G, C, H, W); sample i in group i % (B/G)
    y = (y - y.mean(0)).pow(2).mean(0).add(1e-8).sqrt()  # (B/G, C, H, W)
    y = y.mean((1, 2, 3)).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # (B, 1, H, W)
    y = current_shard().take(y, local)  # (B / ranks, 1, H, W): this rank's rows
    return torch.cat([x, y.to(x.dtype)], 1)  # (local, C + 1, H, W)


# Residual D block (StyleGAN2 Fig. 7c): two 3x3 convs and a 1x1 skip, halving the size.
class DiscriminatorBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, activate=True)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, activate=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.avg_pool2d(self.skip(x), 2)  # (B, O, H/2, W/2)
        x = F.avg_pool2d(self.conv1(self.conv0(x)), 2)  # (B, O, H/2, W/2)
        return (x + y) * math.sqrt(0.5)


# StyleGAN2 residual discriminator with a minibatch-stddev epilogue.
class StyleDiscriminator(nn.Module):
    def __init__(self, img_ch: int, image_size: int, width: int):
        super().__init__()
        ch = _channels(image_size, image_size, width)
        self.from_rgb = EqualConv2d(img_ch, ch, 1, activate=True)
        blocks, res = [], image_size
        while res > 4:
            nxt = _channels(res // 2, image_size, width)
            blocks.append(DiscriminatorBlock(ch, nxt))
            ch, res = nxt, res // 2
        self.blocks = nn.Sequential(*blocks)  # (B, ch, 4, 4)
        self.conv = EqualConv2d(ch + 1, ch, 3, activate=True)
        self.fc = EqualLinear(ch * 16, ch, activate=True)
        self.out = EqualLinear(ch, 1)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        x = self.blocks(self.from_rgb(x))  # (B, ch, 4, 4)
        x = self.conv(minibatch_stddev(x))  # (B, ch, 4, 4)
        return self.out(self.fc(x.flatten(1))).flatten()  # (B,)


def build(params: TrainParams, spec: DataSpec) -> Nets:
    m = params.model
    return {
        "G": StyleGenerator(
            m.latent_dim, spec.image_size, spec.channels, m.width, m.mapping_layers
        ),
        "D": StyleDiscriminator(spec.channels, spec.image_size, m.width),
    }


def mixed_styles(G: StyleGenerator, z: Tensor, ctx: StepContext, prob: float, update: bool):
    """Styles (B, num_ws, W) of z; with probability ``prob`` the layers from a random cutoff on
    take the styles of a second z (StyleGAN's mixing regularisation; one cutoff per batch)."""
    ws = G.mapping(z, update_w_avg=update)  # (B, L, W)
    if prob <= 0:
        return ws
    n = G.num_ws
    ws2 = G.mapping(ctx.latents(z.shape[0]))  # (B, L, W)
    cutoff = torch.randint(1, n, (), device=z.device)
    cutoff = torch.where(torch.rand((), device=z.device) < prob, cutoff, n)
    mask = (torch.arange(n, device=z.device) >= cutoff)[None, :, None]  # (1, L, 1)
    return torch.where(mask, ws2, ws)


def phases(params: TrainParams, spec: DataSpec) -> list[Phase]:
    """D (non-saturating), lazy R1 every ``loss.r1_every`` steps, then G with style mixing."""
    kind = FAMILY.loss_type(params)
    mix = params.loss.style_mixing

    def d_main(nets: Nets, batch: Batch | None, ctx: StepContext) -> Losses:
        assert batch is not None
        real = batch["image"]  # (B, C, H, W)
        G = nets["G"]
        ws = mixed_styles(G, ctx.latents(real.shape[0]), ctx, mix, update=True)  # (B, L, W)
        fake = G.synthesis(ws, "random").detach()  # (B, C, H, W)
        return d_losses(kind, nets["D"](real), nets["D"](fake))  # logits (B,)

    def d_reg(nets: Nets, batch: Batch | None, ctx: StepContext) -> Losses:
        assert batch is not None
        return lazy_r1(params, nets["D"], batch["image"])

    def g_main(nets: Nets, batch: Batch | None, ctx: StepContext) -> Losses:
        G = nets["G"]
        ws = mixed_styles(G, ctx.latents(ctx.batch_size), ctx, mix, update=False)  # (B, L, W)
        fake = G.synthesis(ws, "random")  # (B, C, H, W)
        return {"loss": g_loss(kind, nets["D"](fake))}

    return [
        Phase("D", "D", d_main),
        *r1_phase(params, d_reg),
        Phase("G", "G", g_main, needs_batch=False),
    ]


def _noise_gen(noise: NoiseMode, noise_seed: int | None) -> torch.Generator | None:
    if noise == "random" and noise_seed is not None:
        return torch.Generator().manual_seed(noise_seed)
    return None


def generate(
    nets: Nets,
    z: Tensor,
    labels: Tensor | None = None,
    psi: float = 1.0,
    noise: NoiseMode = "const",
    noise_seed: int | None = None,
) -> Tensor:
    """Images (N, C, H, W) for latents z (N, Z), truncated by ``psi`` (1 = none, 0 = w_avg).

    ``noise``: ``const`` (fixed per-layer maps), ``random`` (seeded by ``noise_seed`` when given,
    else the global RNG) or ``none``.
    """
    return nets["G"](z, psi=psi, noise=noise, gen=_noise_gen(noise, noise_seed))


def generate_mixed(
    nets: Nets,
    z1: Tensor,
    z2: Tensor,
    crossover: int,
    psi: float = 1.0,
    noise: NoiseMode = "const",
    noise_seed: int | None = None,
) -> Tensor:
    """Style mixing: layers ``< crossover`` take z1's styles, the rest z2's; (N, C, H, W).

    ``crossover`` runs from 0 (all of z2) to ``num_ws`` (all of z1); coarse layers (pose,
    shape) come first, fine ones (texture, colour) last. Both are truncated by ``psi``.
    """
    G = nets["G"]
    n = G.num_ws
    if not 0 <= crossover <= n:
        raise ConfigError(f"--crossover: expected a style layer index in 0..{n}, got {crossover}")
    if z1.shape != z2.shape:
        raise ConfigError(f"style mixing needs latents of one shape, got {z1.shape} and {z2.shape}")
    w1, w2 = G.mapping(z1, psi), G.mapping(z2, psi)  # (N, L, W) each
    ws = torch.cat([w1[:, :crossover], w2[:, crossover:]], 1)  # (N, L, W)
    return G.synthesis(ws, noise, _noise_gen(noise, noise_seed))


def styled(
    nets: Nets, z: Tensor, psi: float, z2: Tensor | None = None, crossover: int | None = None
) -> Tensor:
    """Truncated sampling, mixed with ``z2``'s styles from layer ``crossover`` (default: half)."""
    if z2 is None:
        return generate(nets, z, psi=psi)
    layer = nets["G"].num_ws // 2 if crossover is None else crossover
    return generate_mixed(nets, z, z2, layer, psi=psi)


class StyleGANModel(FamilyOptions):
    """StyleGAN's own ``model`` keys."""

    mapping_layers: int = Field(8, ge=1, description="mapping network depth (z -> w)")


class StyleGANLoss(FamilyOptions):
    """StyleGAN's own ``loss`` keys."""

    style_mixing: float = Field(
        0.9, ge=0, le=1, description="style-mixing regularisation probability"
    )


FAMILY = Family(
    name="stylegan",
    description="StyleGAN2: mapping net, modulated convs, noise, skip G, residual D, lazy R1",
    paper="Karras et al. 2020, Analyzing and Improving the Image Quality of StyleGAN",
    build=build,
    phases=phases,
    generate=generate,
    default_loss="nonsaturating",
    allowed_losses=("nonsaturating", "hinge"),
    check=require_power_of_two,
    # One D step per G step, its own fixed D (no spectral norm, no normalisation layers).
    reads=frozenset(
        {"model.latent_dim", "model.width", "loss.type", "loss.r1_gamma", "loss.r1_every"}
    ),
    styled=styled,
    options={"model": StyleGANModel, "loss": StyleGANLoss},
)
