"""Paired evaluation of an unpaired translation: each translated held-out input against its true
counterpart, next to the untranslated input against the same counterpart.

An unpaired set can still know what each image shows (``twemoji-noto`` keeps every emoji's
codepoint: :mod:`gan_models.data.pairing`). Then a held-out Twemoji image translated to Noto's
style can be scored against Noto's own drawing of the same emoji, and back. Per direction,
PSNR (dB) and SSIM of ``G(x)`` against the counterpart ``y``, and of ``x`` itself against ``y``:
the identity baseline, what doing nothing scores, which a translation must beat to have moved
towards the target's drawing rather than merely restyled. Both computed the conventional way
(images in [0, 1], data range 1, :func:`~gan_models.metrics.ssim.image_quality`), means over the
pairs, as SRGAN's against bicubic.

CycleGAN's evaluation plan computes this on the test split when the split keeps its keys; the
registry renders it (``paired_translation``), and a set without keys has no such entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from gan_models.errors import DataError
from gan_models.metrics.image_to_image import batched, generator_device
from gan_models.metrics.registry import Metric, fmt, register_metric
from gan_models.metrics.ssim import convention, image_quality

DIRECTIONS = {"a_to_b": "G_AB", "b_to_a": "G_BA"}  # direction -> generator of nets["G"]


@torch.no_grad()
def paired_translation_metrics(
    nets: Mapping[str, nn.Module],
    pairs: Mapping[str, tuple[Tensor, Tensor]],
    *,
    lineage: Mapping[str, Any] | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """PSNR and SSIM of each direction's translations and of its untranslated inputs against
    the true counterparts.

    ``pairs``: direction (``a_to_b``, ``b_to_a``) -> (inputs x (N, C, H, W), counterparts y
    (N, C, H, W)), both in [-1, 1], row i of y the target domain's drawing of what row i of x
    shows. ``lineage``: how the pairs were matched, per direction (kept in the result). Returns
    per direction ``translated`` and ``identity`` ({psnr, ssim}), their differences
    ``psnr_gain``/``ssim_gain`` and ``n_pairs``; plus ``ssim_sigma`` (1.5, or 0.5 for images
    under 11 px) and ``convention``.
    """
    G = nets["G"].eval()
    dev = generator_device(nets)
    out: dict[str, Any] = {}
    sigma = 1.5
    for direction, (x, y) in pairs.items():
        if direction not in DIRECTIONS:
            raise DataError(f"paired translation: unknown direction {direction!r}")
        if not (x.is_floating_point() and y.is_floating_point()):
            raise DataError(
                f"paired translation {direction}: images must be float in [-1, 1], got "
                f"{x.dtype} inputs and {y.dtype} counterparts"
            )
        if x.shape != y.shape:
            raise DataError(
                f"paired translation {direction}: inputs {tuple(x.shape)}, "
                f"counterparts {tuple(y.shape)}"
            )
        fwd = getattr(G, DIRECTIONS[direction])
        t = batched(lambda b, f=fwd: f(b.to(dev)).clamp(-1, 1), x, batch_size)  # (N, C, H, W)
        sigma = 1.5 if min(x.shape[-2:]) >= 11 else 0.5
        m: dict[str, Any] = {"n_pairs": int(x.shape[0])}
        for who, img in (("translated", t), ("identity", x.float())):
            q = image_quality(img, y.float(), sigma=sigma)
            m[who] = {"psnr": float(q["psnr"].mean()), "ssim": float(q["ssim"].mean())}
        m["psnr_gain"] = m["translated"]["psnr"] - m["identity"]["psnr"]
        m["ssim_gain"] = m["translated"]["ssim"] - m["identity"]["ssim"]
        if lineage and direction in lineage:
            m["paired_by"] = dict(lineage[direction])
        out[direction] = m
    out["ssim_sigma"] = sigma
    out["convention"] = convention(sigma)
    return out


def _directions(r: dict[str, Any]):
    return [(d, r[d]) for d in DIRECTIONS if isinstance(r.get(d), dict)]


def paired_translation_summary(r: dict[str, Any]) -> dict[str, float]:
    s: dict[str, float] = {}
    for d, m in _directions(r):
        for metric in ("psnr", "ssim"):
            s[f"paired_{metric}_{d}"] = m["translated"][metric]
            s[f"paired_{metric}_identity_{d}"] = m["identity"][metric]
    return s


def paired_translation_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for d, m in _directions(r):
        arrow = d.replace("_to_", "->").upper()
        by = (m.get("paired_by") or {}).get("by", "key")
        for metric in ("psnr", "ssim"):
            rows.append(
                (
                    f"{metric.upper()} {arrow} (paired)",
                    fmt(m["translated"][metric]),
                    f"untranslated input {fmt(m['identity'][metric])}; difference "
                    f"{m[f'{metric}_gain']:+.4g}; {m['n_pairs']} held-out pairs by {by}",
                )
            )
    return rows


# Computed by CycleGAN's evaluation plan when the test split keeps its keys.
PAIRED_TRANSLATION = register_metric(
    Metric(
        "paired_translation",
        None,
        summary=paired_translation_summary,
        rows=paired_translation_rows,
        function=paired_translation_metrics,
        description="PSNR and SSIM of translations and of untranslated inputs against the "
        "true counterparts (pairs kept by an unpaired set)",
    )
)
