"""InceptionV3 as used for standard FID, written without torchvision.

The network matches the TensorFlow Inception graph of 2015-12-05 ported to PyTorch as
``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release "fid_weights"; torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth`` holds the same weights): torchvision's Inception3
layout with aux logits removed, a 1008-class fc, and pytorch-fid's FIDInceptionA/C/E_1/E_2 blocks,
whose average pools exclude the zero padding (TensorFlow's behaviour) and whose last block
max-pools. Features are the 2048-d final average pool; IS logits are ``pool @ fc.weight.T``
without the bias, as in the original IS code and torch-fidelity's ``logits_unbiased``.

Weights come from, in order: an explicit path, env ``GANOPS_INCEPTION_WEIGHTS``, torch hub's cache
(``torch.hub.get_dir()/checkpoints/pt_inception-2015-12-05-6726825d.pth``), or a download from
pytorch-fid's release, checked against the sha256 prefix in the file name as torch.hub does.
"""

from __future__ import annotations

import os
import re
import urllib.error
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from gan_models.errors import DataError, GanopsError
from gan_models.metrics.extractor import FeatureExtractor
from gan_models.metrics.images import to_uint8
from gan_models.utils.io import sha256_file

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE
)
WEIGHTS_ENV = "GANOPS_INCEPTION_WEIGHTS"
INPUT_SIZE = 299
NAME = "inception-v3-fid"
# torch.hub's rule: the hex digits after the last "-" of the file name prefix its sha256.
_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")

ResizeMode = Literal["bilinear", "pil-bicubic"]
RESIZE_MODES: dict[str, str] = {
    "bilinear": (
        "bilinear to 299x299 as pytorch-fid (F.interpolate, align_corners=False on [0, 1] input, "
        "then 2x - 1)"
    ),
    "pil-bicubic": (
        "PIL bicubic to 299x299 per channel as clean-fid, on images quantised to uint8, "
        "clipped to 0..255, then (x - 128) / 128"
    ),
}


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm(eps=1e-3) + ReLU."""

    def __init__(self, c_in: int, c_out: int, **kwargs: int | tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool leaves the zero padding out of the mean.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


# Inception-A block (35x35 grid), FID variant (pytorch-fid FIDInceptionA).
class InceptionA(nn.Module):
    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)  # (B, 224 + pool_features, H, W)


# Inception-B reduction block (35x35 -> 17x17), as in torchvision.
class InceptionB(nn.Module):
    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)  # (B, 480 + c_in, H/2, W/2)


# Inception-C block (17x17 grid, factorised 7x7), FID variant (pytorch-fid FIDInceptionC).
class InceptionC(nn.Module):
    def __init__(self, c_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            bd = layer(bd)
        bd = self.branch7x7dbl_5(bd)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)  # (B, 768, H, W)


# Inception-D reduction block (17x17 -> 8x8), as in torchvision.
class InceptionD(nn.Module):
    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)  # (B, 512 + c_in, H/2, W/2)


# Inception-E block (8x8 grid, expanded filter bank), FID variants (pytorch-fid FIDInceptionE_1
# with a padding-excluding average pool, FIDInceptionE_2 with a max pool as in the TF graph).
class InceptionE(nn.Module):
    def __init__(self, c_in: int, pool: Literal["avg", "max"]) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(c_in, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "avg":
            bp = _tf_avg_pool(x)
        else:
            bp = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        bp = self.branch_pool(bp)
        return torch.cat([b1, b3, bd, bp], 1)  # (B, 2048, H, W)


# InceptionV3 (Szegedy et al. 2016) in the layout of the TF 2015-12-05 graph used for FID.
class FIDInceptionV3(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """2048-d pool features of prepared input (B, 3, 299, 299) in [-1, 1]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B, 768, 17, 17)
        x = self.Mixed_7a(x)  # (B, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (B, 2048, 8, 8)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 2048)

    def logits_unbiased(self, pool: torch.Tensor) -> torch.Tensor:
        """IS logits (B, 1008) from pool features (B, 2048), without the fc bias."""
        return pool @ self.fc.weight.T


def hub_weights_path(filename: str = FID_WEIGHTS_FILE) -> Path:
    """Where torch.hub caches a downloaded checkpoint of this name."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _how_to_provide() -> str:
    return (
        f"provide {FID_WEIGHTS_FILE} (from {FID_WEIGHTS_URL}) by passing its path, "
        f"setting {WEIGHTS_ENV}=PATH, or placing it at {hub_weights_path()}"
    )


def resolve_inception_weights(
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    url: str = FID_WEIGHTS_URL,
) -> Path:
    """Find the FID Inception weights file; download it to torch hub's cache if allowed.

    Order: ``path``, env ``GANOPS_INCEPTION_WEIGHTS``, the hub cache, the download from ``url``
    (checked against the sha256 prefix in its file name). Raises :class:`GanopsError` naming the
    three ways to provide the file when none works.
    """
    if path is not None or os.environ.get(WEIGHTS_ENV):
        given = Path(path if path is not None else os.environ[WEIGHTS_ENV]).expanduser()
        source = "the weights path" if path is not None else WEIGHTS_ENV
        if not given.is_file():
            raise GanopsError(
                f"Inception weights file {given} (from {source}) does not exist; "
                + _how_to_provide()
            )
        return given
    filename = url.rsplit("/", 1)[-1]
    cached = hub_weights_path(filename)
    if cached.is_file():
        return cached
    if not download:
        raise GanopsError(
            f"Inception weights not found and downloading is off; {_how_to_provide()}"
        )
    match = _HASH_PREFIX.search(filename)
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Writes to a temporary file and renames it only after the hash prefix matched.
        torch.hub.download_url_to_file(
            url, str(cached), hash_prefix=match.group(1) if match else None
        )
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise GanopsError(
            f"Inception weights not found locally and the download from {url} failed ({reason}); "
            + _how_to_provide()
        ) from None
    except RuntimeError as e:  # torch.hub's "invalid hash value" check
        raise GanopsError(
            f"download from {url} failed its checksum ({e}); {_how_to_provide()}"
        ) from None
    return cached


def load_inception_state(model: FIDInceptionV3, path: str | os.PathLike) -> None:
    """Load a state dict file into ``model``, requiring exactly the expected keys and shapes.

    BatchNorm's ``num_batches_tracked`` counters carry no weights and may be absent.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise GanopsError(f"{path}: not a readable PyTorch state dict ({e})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise GanopsError(f"{path}: expected a state dict, got {type(state).__name__}")
    expected = model.state_dict()

    def weights(keys: object) -> set[str]:
        return {k for k in keys if not k.endswith("num_batches_tracked")}

    missing = sorted(weights(expected) - weights(state))
    unexpected = sorted(weights(state) - weights(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in sorted(weights(state) & weights(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", wrong),
        ):
            if items:
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise GanopsError(
            f"{path} does not hold the FID InceptionV3 weights ({FID_WEIGHTS_FILE}): "
            + "; ".join(parts)
        )
    full = {k: v for k, v in state.items() if k in expected}
    for k, v in expected.items():
        full.setdefault(k, v)  # absent num_batches_tracked
    model.load_state_dict(full, strict=True)


class InceptionExtractor(FeatureExtractor):
    """FID-standard InceptionV3: 2048-d pool features, 1008 unbiased logits for IS.

    ``resize`` picks how images reach 299x299: ``"bilinear"`` (pytorch-fid) or ``"pil-bicubic"``
    (clean-fid). 1-channel images are repeated to 3 channels.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        resize: ResizeMode = "bilinear",
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        download: bool = True,
        url: str = FID_WEIGHTS_URL,
    ) -> None:
        super().__init__(device=device, batch_size=batch_size)
        if resize not in RESIZE_MODES:
            raise GanopsError(
                f"unknown Inception resize {resize!r}; expected one of {sorted(RESIZE_MODES)}"
            )
        self.weights_path = resolve_inception_weights(weights, download=download, url=url)
        self.model = FIDInceptionV3()
        load_inception_state(self.model, self.weights_path)
        self.model.eval().requires_grad_(False).to(self.device)
        self.name = NAME
        self.sha256 = sha256_file(self.weights_path)
        self.resize_mode = resize
        self.resize = RESIZE_MODES[resize]
        self.feature_dim = 2048
        self.num_classes = 1008

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W)
        elif x.shape[1] != 3:
            raise DataError(f"InceptionV3 takes 1- or 3-channel images, got {x.shape[1]} channels")
        if self.resize_mode == "bilinear":
            x01 = (x + 1.0) / 2.0
            x01 = F.interpolate(
                x01, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False
            )
            return 2.0 * x01 - 1.0  # (B, 3, 299, 299)
        return pil_bicubic_resize(to_uint8(x), INPUT_SIZE)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self.model(x)  # (B, 2048)
        return pool, self.model.logits_unbiased(pool)  # (B, 1008)


def pil_bicubic_resize(images: np.ndarray, size: int) -> torch.Tensor:
    """clean-fid's resize: uint8 (B, C, H, W) -> float32 (B, C, size, size) in about [-1, 1].

    Each channel is resized as a float ('F' mode) PIL image with bicubic filtering and clipped to
    0..255, then mapped with (x - 128) / 128 as the TF graph does.
    """
    b, c = images.shape[:2]
    out = np.empty((b, c, size, size), dtype=np.float32)
    for i in range(b):
        for j in range(c):
            img = Image.fromarray(images[i, j].astype(np.float32))  # mode "F"
            out[i, j] = np.asarray(img.resize((size, size), resample=Image.Resampling.BICUBIC))
    return (torch.from_numpy(out).clamp_(0, 255) - 128.0) / 128.0
