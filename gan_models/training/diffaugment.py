"""Differentiable augmentation of everything the discriminator sees (DiffAugment, Zhao et al. 2020).

With few images a discriminator memorises them; augmenting its inputs stops that, and as long as
the same augmentation is applied to real *and* generated images, and is differentiable so the
generator's gradient passes through it, the generator still learns the un-augmented
distribution. The policy is a list of the paper's ops (``train.augment``):

- ``color``: brightness (add U(-0.5, 0.5)), saturation (scale each pixel's deviation from its
  channel mean by U(0, 2)), contrast (scale the deviation from the image mean by U(0.5, 1.5));
- ``translation``: shift by up to 1/8 of the side in each direction, zero padding;
- ``cutout``: zero a square of half the side, centred uniformly, clipped at the border.

Each op is applied to each image with probability ``train.augment_p`` (1 in DiffAugment). The
trainer wraps every network of the family's critic groups (:func:`augment_critics`), so a phase
calling ``nets["D"](x)`` sees ``D(augment(x))``: real and fake in the D phase, fake in the G
phase, and R1 and the gradient penalty take the gradient with respect to the un-augmented input
through the augmentation, as the DiffAugment and StyleGAN2-ADA code do. The random draws come
from a generator of their own, seeded from the run's seed and the step (:meth:`Augment.reseed`):
the run's other draws are untouched and a resumed run augments exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from gan_models.utils.batch_shard import current as current_shard

# One op: (images (B, C, H, W), generator, per-image probability) -> images (B, C, H, W).
Op = Callable[[Tensor, torch.Generator, float], Tensor]

TRANSLATION_RATIO = 0.125  # largest shift, as a fraction of the side
CUTOUT_RATIO = 0.5  # side of the cut square, as a fraction of the image side


def _uniform(x: Tensor, g: torch.Generator) -> Tensor:
    """One U(0, 1) per image, (B, 1, 1, 1), in x's dtype."""
    u = torch.rand(x.shape[0], 1, 1, 1, generator=g, device=x.device)
    return u.to(x.dtype)


def _only(x: Tensor, out: Tensor, g: torch.Generator, p: float) -> Tensor:
    """``out`` for a share p of the images, drawn per image, x (exactly) for the rest."""
    if p >= 1:  # DiffAugment: every image, and no draw
        return out
    gate = torch.rand(x.shape[0], generator=g, device=x.device) < p  # (B,)
    return torch.where(gate.view(-1, 1, 1, 1), out, x)


def brightness(x: Tensor, g: torch.Generator, p: float = 1.0) -> Tensor:
    """x + U(-0.5, 0.5) per image."""
    return _only(x, x + (_uniform(x, g) - 0.5), g, p)


def saturation(x: Tensor, g: torch.Generator, p: float = 1.0) -> Tensor:
    """Each pixel's deviation from its mean over channels scaled by U(0, 2) per image."""
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    return _only(x, (x - mean) * (_uniform(x, g) * 2) + mean, g, p)


def contrast(x: Tensor, g: torch.Generator, p: float = 1.0) -> Tensor:
    """The deviation from the image's mean scaled by U(0.5, 1.5) per image."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return _only(x, (x - mean) * (_uniform(x, g) + 0.5) + mean, g, p)


def translate_by(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Image b shifted down by dy[b] and right by dx[b] pixels (B,), zeros shifted in."""
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device)[None, :] - dy[:, None]  # (B, H) source row
    cols = torch.arange(w, device=x.device)[None, :] - dx[:, None]  # (B, W) source column
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    source = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # (B, H, W)
    # one gather over the flattened pixels: a few times faster than advanced indexing on CPU
    index = source.flatten(1)[:, None, :].expand(b, c, h * w)  # (B, C, H*W)
    out = x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)
    out = out * inside[:, None].to(x.dtype)  # (B, C, H, W)
    return out.contiguous(memory_format=_memory_format(x))


def translation(x: Tensor, g: torch.Generator, p: float = 1.0) -> Tensor:
    """Shift each image by integers in [-s, s] down and right, s = 1/8 of the side (rounded)."""
    b, _, h, w = x.shape
    sy, sx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy = torch.randint(-sy, sy + 1, (b,), generator=g, device=x.device)
    dx = torch.randint(-sx, sx + 1, (b,), generator=g, device=x.device)
    return _only(x, translate_by(x, dy, dx), g, p)


def cutout_mask(shape: Sequence[int], cy: Tensor, cx: Tensor, device=None) -> Tensor:
    """(B, 1, H, W): 0 on the square of half the side centred on (cy, cx) (B,), clipped at the
    border, 1 elsewhere."""
    _, _, h, w = shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    rows = torch.arange(h, device=device)[None, :] - (cy[:, None] - ch // 2)  # (B, H)
    cols = torch.arange(w, device=device)[None, :] - (cx[:, None] - cw // 2)  # (B, W)
    cut = ((rows >= 0) & (rows < ch))[:, :, None] & ((cols >= 0) & (cols < cw))[:, None, :]
    return (~cut)[:, None]


def cutout(x: Tensor, g: torch.Generator, p: float = 1.0) -> Tensor:
    """Zero a square of half the side per image, its centre uniform over the image (an even
    side may also centre on the far border), as in DiffAugment."""
    b, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = torch.randint(0, h + 1 - ch % 2, (b,), generator=g, device=x.device)
    cx = torch.randint(0, w + 1 - cw % 2, (b,), generator=g, device=x.device)
    keep = cutout_mask(x.shape, cy, cx, x.device)  # (B, 1, H, W)
    return _only(x, x * keep.to(x.dtype), g, p)


POLICIES: dict[str, tuple[Op, ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def diff_augment(x: Tensor, policy: Sequence[str], g: torch.Generator, p: float = 1.0) -> Tensor:
    """x (B, C, H, W) through the policy's ops in order; x itself when the policy is empty."""
    for name in policy:
        for op in POLICIES[name]:
            x = op(x, g, p)
    return x


def _memory_format(x: Tensor) -> torch.memory_format:
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


class Augment:
    """The run's augmentation: the policy, its probability and its own seeded generator."""

    def __init__(self, policy: Sequence[str], p: float, seed: int, device: torch.device):
        self.policy, self.p, self.seed = tuple(policy), p, seed
        self.generator = torch.Generator(device=device)

    def reseed(self, step: int) -> None:
        """Seed the draws of ``step`` from the run's seed and the step alone."""
        digest = hashlib.sha256(f"diffaugment:{self.seed}:{step}".encode()).digest()
        self.generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)

    def __call__(self, x: Tensor) -> Tensor:
        shard = current_shard()
        if shard.world == 1:
            return diff_augment(x, self.policy, self.generator, self.p)
        # Data-parallel: every op is per image with per-image draws, so this rank's rows placed
        # at their offset in a global-size batch get exactly the draws one process gives them.
        n = x.shape[0]
        before = x.new_zeros((shard.rank * n, *x.shape[1:]))
        after = x.new_zeros(((shard.world - shard.rank - 1) * n, *x.shape[1:]))
        full = torch.cat([before, x, after])  # (n * world, C, H, W)
        return shard.take(diff_augment(full, self.policy, self.generator, self.p), n)


# A critic that sees its image input augmented: D(augment(x), *rest).
class AugmentedCritic(nn.Module):
    def __init__(self, net: nn.Module, augment: Callable[[Tensor], Tensor]):
        super().__init__()
        self.net = net
        self.augment = augment

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        return self.net(self.augment(x), *args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # the critic's own attributes, as a phase would read them
            return getattr(self._modules["net"], name)


def augment_critics(
    nets: dict[str, nn.Module], critics: Sequence[str], augment: Callable[[Tensor], Tensor]
) -> dict[str, nn.Module]:
    """``nets`` with each network named in ``critics`` seeing its input augmented."""
    return {k: AugmentedCritic(m, augment) if k in critics else m for k, m in nets.items()}
