"""Metrics of image-to-image families on held-out images, next to their baselines.

- Super-resolution (SRGAN): PSNR and SSIM of ``G(lr)`` against the high-resolution image, and of
  bicubic upsampling of the same ``lr`` (the baseline a super-resolution model must beat), on
  images in [0, 1] with data range 1 as papers, scikit-image and torchmetrics compute them.
- Translation (CycleGAN): FID per direction (``G_AB(a)`` against real ``b``, ``G_BA(b)`` against
  real ``a``) in the extractor's feature space, each next to its real-vs-real floor and to the
  untranslated inputs' FID, and the cycle reconstruction error ``|G_BA(G_AB(a)) - a|_1`` (and
  the reverse), mean absolute error in [-1, 1] pixel units.

The families' evaluation plans (``Family.evaluation``: SRGAN, CycleGAN) call these on the
dataset's test split, which training never sees; both are registered metrics
(``super_resolution``, ``translation``) whose results the plan supplies, so their summary numbers
and table rows come from the registry like every other metric's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_models.errors import DataError
from gan_models.metrics.extractor import FeatureExtractor
from gan_models.metrics.fid import feature_statistics, frechet_distance
from gan_models.metrics.reference import ReferenceStats
from gan_models.metrics.registry import Metric, fmt, register_metric
from gan_models.metrics.ssim import convention, image_quality

#: A family's networks by name (``gan_models.families.base.Nets``): only ``G`` is used here.
Nets = dict[str, nn.Module]


@torch.no_grad()
def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int) -> Tensor:
    """``fn`` over ``x`` (N, ...) in chunks, outputs concatenated on CPU."""
    return torch.cat(
        [fn(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)]
    )


def generator_device(nets: Nets) -> torch.device:
    """Where the generator ``nets["G"]`` lives."""
    return next(nets["G"].parameters()).device


@torch.no_grad()
def super_resolution_metrics(
    nets: Nets, lr: Tensor, hr: Tensor, *, batch_size: int = 256
) -> dict[str, Any]:
    """PSNR (dB) and SSIM of the generator and of bicubic upsampling, means over the pairs.

    ``lr`` (N, C, h, w) and ``hr`` (N, C, H, W) in [-1, 1], H = h * scale. Both metrics are
    computed the conventional way (images mapped to [0, 1], data range 1; ``convention`` in
    the result says it). SSIM uses the Gaussian 11x11 window (sigma 1.5) when the images allow
    it, else sigma 0.5 (5x5).
    """
    if lr.shape[0] != hr.shape[0] or hr.shape[-1] % lr.shape[-1]:
        raise DataError(
            f"super-resolution pairs: {tuple(lr.shape)} inputs, {tuple(hr.shape)} targets"
        )
    G = nets["G"].eval()
    dev = generator_device(nets)
    sr = batched(lambda x: G(x.to(dev)).clamp(-1, 1), lr, batch_size)  # (N, C, H, W)
    size = tuple(hr.shape[-2:])
    bicubic = F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
    sigma = 1.5 if min(size) >= 11 else 0.5
    out: dict[str, Any] = {"n": int(hr.shape[0]), "scale": hr.shape[-1] // lr.shape[-1]}
    for name, y in (("generator", sr), ("bicubic", bicubic)):
        q = image_quality(y, hr, sigma=sigma)
        out[name] = {"psnr": float(q["psnr"].mean()), "ssim": float(q["ssim"].mean())}
    out["psnr_gain"] = out["generator"]["psnr"] - out["bicubic"]["psnr"]
    out["ssim_gain"] = out["generator"]["ssim"] - out["bicubic"]["ssim"]
    out["ssim_sigma"] = sigma
    out["convention"] = convention(sigma)
    return out


def _fid(ref: ReferenceStats, feats: np.ndarray) -> float:
    return frechet_distance(ref.mu, ref.sigma, *feature_statistics(feats))


@torch.no_grad()
def translation_metrics(
    nets: Nets,
    test_a: Tensor,
    test_b: Tensor,
    *,
    extractor: FeatureExtractor,
    ref_a: ReferenceStats,
    ref_b: ReferenceStats,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Per-direction FID and cycle error of a CycleGAN on held-out images of both domains.

    ``test_a`` (N_a, C, H, W), ``test_b`` (N_b, C, H, W) in [-1, 1]; ``ref_a``/``ref_b`` the
    reference statistics of each domain's training split. Returns, per direction ``a_to_b`` and
    ``b_to_a``: ``fid`` (translated held-out inputs vs the target domain's reference),
    ``fid_floor`` (the target domain's held-out real images vs the same reference),
    ``fid_untranslated`` (the inputs themselves vs that reference: what doing nothing scores)
    and ``cycle_l1`` (mean |x - G_back(G_forth(x))|).
    """
    G = nets["G"].eval()
    dev = generator_device(nets)

    def run(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        return batched(lambda t: fn(t.to(dev)).clamp(-1, 1), x, batch_size)

    out: dict[str, Any] = {}
    for name, x, fwd, back, ref_dst, real_dst in (
        ("a_to_b", test_a, G.G_AB, G.G_BA, ref_b, test_b),
        ("b_to_a", test_b, G.G_BA, G.G_AB, ref_a, test_a),
    ):
        y = run(fwd, x)  # (N, C, H, W) translated
        cycled = run(back, y)  # (N, C, H, W) back in the source domain
        out[name] = {
            "fid": _fid(ref_dst, extractor.features(y)),
            "fid_floor": _fid(ref_dst, extractor.features(real_dst)),
            "fid_untranslated": _fid(ref_dst, extractor.features(x)),
            "cycle_l1": float((cycled - x).abs().mean()),
            "n_inputs": int(x.shape[0]),
            "n_real": int(real_dst.shape[0]),
        }
    return out


# ---------------------------------------------------------------- registered metrics


def super_resolution_summary(r: dict[str, Any]) -> dict[str, float]:
    s: dict[str, float] = {}
    for who in ("generator", "bicubic"):
        s[f"sr_psnr_{who}"] = r[who]["psnr"]
        s[f"sr_ssim_{who}"] = r[who]["ssim"]
    return s


def super_resolution_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for m in ("psnr", "ssim"):
        rows.append(
            (
                f"{m.upper()} (SR)",
                fmt(r["generator"][m]),
                f"bicubic {fmt(r['bicubic'][m])}; difference {r[f'{m}_gain']:+.4g}; "
                f"x{r['scale']}, {r['n']} held-out images",
            )
        )
    return rows


def translation_summary(r: dict[str, Any]) -> dict[str, float]:
    s: dict[str, float] = {}
    for direction, m in r.items():
        s[f"fid_{direction}"] = m["fid"]
        s[f"cycle_l1_{direction}"] = m["cycle_l1"]
    return s


def translation_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for direction, m in r.items():
        arrow = direction.replace("_to_", "->").upper()
        rows.append(
            (
                f"FID {arrow}",
                fmt(m["fid"]),
                f"floor {fmt(m['fid_floor'])}; untranslated inputs {fmt(m['fid_untranslated'])}; "
                f"{m['n_inputs']} held-out inputs vs the target's reference",
            )
        )
        rows.append((f"cycle L1 {arrow}", fmt(m["cycle_l1"]), "mean |x - G_back(G_forth(x))|"))
    return rows


# Computed by the family's evaluation plan (it needs the networks and both domains), not by
# evaluate_generator: ``compute`` is None.
SUPER_RESOLUTION = register_metric(
    Metric(
        "super_resolution",
        None,
        summary=super_resolution_summary,
        rows=super_resolution_rows,
        function=super_resolution_metrics,
        description="PSNR and SSIM of super-resolved held-out images, and of bicubic upsampling",
    )
)
TRANSLATION = register_metric(
    Metric(
        "translation",
        None,
        summary=translation_summary,
        rows=translation_rows,
        function=translation_metrics,
        description="per-direction FID and cycle L1 error of a translation on held-out images",
    )
)
