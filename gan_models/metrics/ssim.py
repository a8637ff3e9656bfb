"""Full-reference image quality for super-resolution: PSNR and SSIM, per image.

Two uses, two ranges:

- **Reported metrics** (:func:`image_quality`, what ``ganops evaluate`` writes) follow the
  convention of the papers and tools they are compared with: images mapped from the project's
  [-1, 1] to [0, 1], data range 1. SSIM is Wang et al. 2004 as their MATLAB ``ssim`` and
  scikit-image (``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``) compute it:
  an 11x11 Gaussian window of sigma 1.5 (radius ``int(3.5 sigma + 0.5)``), K1 = 0.01,
  K2 = 0.03, population (co)variances, and the mean over the positions where the window lies
  wholly inside the image. torchmetrics computes the same map but also averages the border
  positions of a reflect-padded image, so its default mean differs on small images; its map
  agrees with this one at the valid positions. PSNR does not depend on the range convention
  (MSE and range^2 scale together); SSIM's luminance term does.
- **SRGAN's ``ssim`` content loss** calls :func:`ssim` on images in [-1, 1] with data range 2
  (the defaults below), as it always has; both functions are differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gan_models.errors import DataError

DATA_RANGE = 2.0  # images in [-1, 1]: the training loss's range


def convention(sigma: float = 1.5) -> str:
    """How :func:`image_quality` computes its numbers, for a result's lineage."""
    k = gaussian_window(sigma).shape[-1]
    return (
        f"images in [0, 1] (mapped from [-1, 1]), data_range 1; SSIM: gaussian window {k}x{k}, "
        f"sigma {sigma}, K1 0.01, K2 0.03, population statistics, mean over valid window "
        "positions (Wang et al. 2004, scikit-image)"
    )


def to_unit_range(x: Tensor) -> Tensor:
    """Images (B, C, H, W) from the project's [-1, 1] to [0, 1] (float64 stays float64)."""
    return (x.to(torch.promote_types(x.dtype, torch.float32)) + 1) / 2


def image_quality(x: Tensor, reference: Tensor, sigma: float = 1.5) -> dict[str, Tensor]:
    """PSNR (dB) and SSIM per image (B,) of ``x`` against ``reference``, both (B, C, H, W) in
    [-1, 1], computed the conventional way: on [0, 1] with data range 1 (see :func:`convention`).
    """
    x01, ref01 = to_unit_range(x), to_unit_range(reference)
    return {
        "psnr": psnr(x01, ref01, data_range=1.0),
        "ssim": ssim(x01, ref01, data_range=1.0, sigma=sigma),
    }


def _check_pair(x: Tensor, y: Tensor, what: str) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise DataError(
            f"{what}: expected two image batches of the same shape (B, C, H, W), "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def psnr(x: Tensor, y: Tensor, data_range: float = DATA_RANGE) -> Tensor:
    """Peak signal-to-noise ratio in dB per image (B,): ``10 log10(range^2 / MSE)``.

    Identical images give ``inf``.
    """
    _check_pair(x, y, "psnr")
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)  # (B,)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> Tensor:
    """Normalised 2-D Gaussian window (K, K), K = 2 * int(truncate * sigma + 0.5) + 1."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    return torch.outer(g, g)  # (K, K), sums to 1


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = DATA_RANGE,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Mean structural similarity per image (B,), averaged over channels and valid positions.

    Images smaller than the window (11 px for sigma 1.5) raise a DataError; pass a smaller
    ``sigma`` for tiny images.
    """
    _check_pair(x, y, "ssim")
    window = gaussian_window(sigma)
    k = window.shape[-1]
    if min(x.shape[-2:]) < k:
        raise DataError(
            f"ssim: images of {x.shape[-2]}x{x.shape[-1]} are smaller than the {k}x{k} window "
            f"of sigma={sigma}; use a smaller sigma"
        )
    b, c = x.shape[:2]
    with torch.autocast(x.device.type, enabled=False):
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x, y = x.to(dtype), y.to(dtype)
        # (Co)variances are shift-invariant: centring each image first avoids the float32
        # cancellation of E[x^2] - E[x]^2 (constant images then have exactly zero variance).
        mx, my = x.mean((1, 2, 3), keepdim=True), y.mean((1, 2, 3), keepdim=True)
        xc, yc = x - mx, y - my  # (B, C, H, W)
        kernel = window.to(x).expand(c, 1, k, k)  # (C, 1, K, K), depthwise
        stack = torch.cat([xc, yc, xc * xc, yc * yc, xc * yc])  # (5B, C, H, W)
        m_x, m_y, e_xx, e_yy, e_xy = F.conv2d(stack, kernel, groups=c).split(b)  # (B, C, h, w)
        var_x = e_xx - m_x * m_x
        var_y = e_yy - m_y * m_y
        cov = e_xy - m_x * m_y
        mu_x, mu_y = m_x + mx, m_y + my  # local means of the original images
        c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
        s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
            (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
        )  # (B, C, h, w)
        return s.flatten(1).mean(1)  # (B,)
