"""Domain classifier: a small CNN trained on the real labelled training split of a dataset.

For 28x28 digits, ImageNet features describe the images poorly, so FID/KID/PR/DC are computed on
the penultimate layer of a classifier trained on the digits themselves and IS on its softmax (as in
many GAN papers on MNIST). The classifier is saved as ``model.safetensors`` plus ``card.json``
(held-out accuracy, data hashes, architecture, input size, training params) and identified by the
sha256 of the weights file: any retraining that changes a weight changes the hash, and with it the
lineage of every metric and the key of every cached reference statistic.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from gan_models.data.format import ImageSet
from gan_models.errors import DataError
from gan_models.metrics.extractor import FeatureExtractor
from gan_models.metrics.images import (
    ArrayLike,
    ImagesLike,
    ScaledImages,
    array_sha256,
    as_images,
    image_batches,
)
from gan_models.utils.determinism import lineage as determinism_lineage
from gan_models.utils.determinism import pinned_threads
from gan_models.utils.io import atomic_dir, sha256_file

NAME = "domain-cnn"
ARCH_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
# Inputs of another size are resized with this, stated in every result's lineage.
RESIZE_MODE = "bilinear (F.interpolate, align_corners=False, antialias=True)"


@dataclass(frozen=True)
class DomainCNNArch:
    """Shape of a :class:`DomainCNN`: everything needed to rebuild it before loading weights."""

    in_channels: int
    num_classes: int
    input_size: tuple[int, int]  # (H, W) the network was trained at
    width: int = 16  # channels of the first stage; the second has 2 * width
    hidden: int = 128  # feature dimension (penultimate layer)
    version: int = ARCH_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DomainCNNArch:
        d = dict(d)
        d["input_size"] = tuple(d["input_size"])
        return cls(**d)


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


# Small VGG-style classifier (two 3x3-conv stages with max-pooling, Simonyan & Zisserman 2015).
class DomainCNN(nn.Module):
    def __init__(self, arch: DomainCNNArch) -> None:
        super().__init__()
        h, w = arch.input_size
        if h < 4 or w < 4:
            raise DataError(f"the domain classifier needs images of at least 4x4, got {h}x{w}")
        self.arch = arch
        c = arch.width
        self.body = nn.Sequential(
            *_conv_bn_relu(arch.in_channels, c),
            *_conv_bn_relu(c, c),
            nn.MaxPool2d(2),
            *_conv_bn_relu(c, 2 * c),
            *_conv_bn_relu(2 * c, 2 * c),
            nn.MaxPool2d(2),
        )
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * c * (h // 4) * (w // 4), arch.hidden), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(arch.hidden, arch.num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (B, hidden) of images (B, C, H, W) in [-1, 1]."""
        return self.embed(self.body(x))  # (B, 2c, H/4, W/4) -> (B, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, num_classes)


def _labels(ds: ImageSet | None, labels: ArrayLike | None, what: str) -> np.ndarray:
    y = ds.labels if ds is not None else labels
    if y is None:
        raise DataError(
            f"{what} has no labels: the domain classifier trains on labelled real images; "
            "for an unlabelled dataset use the Inception extractor (features.extractor: inception) "
            "with its weights file"
        )
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise DataError(
            f"{what} labels must be non-negative integers of shape (N,), got {y.dtype} {y.shape}"
        )
    return y.astype(np.int64)


def fit_classifier(
    images: ImagesLike,
    labels: ArrayLike,
    *,
    num_classes: int,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    width: int = 16,
    hidden: int = 128,
    max_shift: int = 2,
    max_steps: int | None = None,
) -> DomainCNN:
    """Train a :class:`DomainCNN` on images (N, C, H, W) in [-1, 1] with integer labels (N,).

    ``images`` may be a split opened from disk (a :class:`ScaledImages`): each batch is then
    gathered from the file by the epoch's seeded permutation, and the weights are those of
    the same split held in memory.

    AdamW with a one-cycle schedule, random translations of up to ``max_shift`` pixels as the only
    augmentation. Seeded: the same inputs and seed give the same weights on the same device.
    ``max_steps`` stops early (for quick checks).
    """
    if isinstance(images, ScaledImages):
        # A split opened from disk: each batch's rows are read and scaled when drawn, with the
        # values the split held in memory would give.
        x: ImagesLike = images
        if len(images) == 0:
            raise DataError("training images holds no images")

        def rows(idx: torch.Tensor) -> torch.Tensor:
            return as_images(images[idx.numpy()], what="training images")

    else:
        x = as_images(images, what="training images")  # (N, C, H, W)

        def rows(idx: torch.Tensor) -> torch.Tensor:
            return x[idx]

    y = torch.from_numpy(_labels(None, labels, "training set"))
    if y.shape[0] != x.shape[0]:
        raise DataError(f"{x.shape[0]} training images but {y.shape[0]} labels")
    if int(y.max()) >= num_classes:
        raise DataError(f"label {int(y.max())} out of range for num_classes={num_classes}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise DataError(
            f"epochs, batch_size and lr must be positive, got {epochs}, {batch_size}, {lr}"
        )
    device = torch.device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)  # batch order and shifts, independent of device
    arch = DomainCNNArch(
        in_channels=x.shape[1],
        num_classes=num_classes,
        input_size=(x.shape[2], x.shape[3]),
        width=width,
        hidden=hidden,
    )
    model = DomainCNN(arch).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    n = x.shape[0]
    steps_per_epoch = (n + batch_size - 1) // batch_size
    total = (
        epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total, 1))
    h, w = arch.input_size
    step = 0
    model.train()
    while step < total:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            if step >= total:
                break
            idx = order[start : start + batch_size]
            xb = rows(idx)  # (B, C, H, W)
            if max_shift > 0:
                # One random translation per batch; replicate padding keeps the background value.
                xb = F.pad(xb, (max_shift,) * 4, mode="replicate")
                dy, dx = torch.randint(0, 2 * max_shift + 1, (2,), generator=gen).tolist()
                xb = xb[:, :, dy : dy + h, dx : dx + w]
            loss = F.cross_entropy(model(xb.to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    return model.eval()


@torch.inference_mode()
def classifier_accuracy(
    model: DomainCNN,
    images: ImagesLike,
    labels: ArrayLike,
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy of ``model`` on images (N, C, H, W) in [-1, 1] resized to its input size."""
    y = torch.from_numpy(_labels(None, labels, "test set"))
    device = next(model.parameters()).device if device is None else torch.device(device)
    model = model.eval().to(device)
    correct = n = 0
    for xb in image_batches(images, batch_size, what="test images"):  # read batch by batch
        pred = model(_fit_input(xb, model.arch).to(device)).argmax(1).cpu()  # (B,)
        correct += int((pred == y[n : n + xb.shape[0]]).sum())
        n += xb.shape[0]
    return correct / n


def _fit_input(x: torch.Tensor, arch: DomainCNNArch) -> torch.Tensor:
    """Match channels and size of a batch (B, C, H, W) to what the classifier was trained on."""
    c = x.shape[1]
    if c != arch.in_channels:
        if c == 1 and arch.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise DataError(
                f"the domain classifier takes {arch.in_channels}-channel images, got {c} channels"
            )
    if tuple(x.shape[2:]) != tuple(arch.input_size):
        x = F.interpolate(
            x, size=tuple(arch.input_size), mode="bilinear", align_corners=False, antialias=True
        )
    return x


def train_domain_classifier(
    train: ImageSet,
    test: ImageSet,
    out_dir: str | Path,
    *,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    width: int = 16,
    hidden: int = 128,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train the domain classifier on ``train``, measure it on ``test``, save it to ``out_dir``.

    ``out_dir`` is written whole or not at all: ``model.safetensors`` and ``card.json``. Returns
    the card (test accuracy, data hashes, architecture, input size, training params, ``sha256`` of
    the weights file) with ``path`` and ``seconds`` (the training time, kept out of the card so
    that the same inputs write the same files) added.
    """
    name = f" of {train.meta['name']!r}" if train.meta.get("name") else ""
    y_train = _labels(train, None, f"the training split{name}")
    y_test = _labels(test, None, f"the test split{name}")
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(
            f"train and test images differ in shape: {train.images.shape[1:]} vs {test.images.shape[1:]}"
        )
    num_classes = max(int(train.num_classes or 0), int(y_train.max()) + 1, int(y_test.max()) + 1)
    # The same weights on any core count: CPU kernels split their sums by the thread count.
    with pinned_threads(torch.device(device).type == "cpu"):
        t0 = time.perf_counter()
        model = fit_classifier(
            train.images,
            y_train,
            num_classes=num_classes,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            width=width,
            hidden=hidden,
            max_steps=max_steps,
        )
        seconds = time.perf_counter() - t0
        acc = classifier_accuracy(model, test.images, y_test)
        determinism = determinism_lineage()
    card = {
        "name": NAME,
        "arch": model.arch.to_dict(),
        "input_size": list(model.arch.input_size),
        "in_channels": model.arch.in_channels,
        "num_classes": num_classes,
        "class_names": train.meta.get("class_names"),
        "feature_dim": model.arch.hidden,
        "test_accuracy": acc,
        "data": {
            "train_sha256": array_sha256(train.images, y_train),
            "test_sha256": array_sha256(test.images, y_test),
            "train_name": train.meta.get("name"),
            "n_train": int(train.images.shape[0]),
            "n_test": int(test.images.shape[0]),
        },
        "training": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "device": str(device),
            "max_steps": max_steps,
            "optimizer": "AdamW(weight_decay=1e-4) + OneCycleLR",
            "augmentation": "random translation up to 2 px, replicate padding",
            "torch": torch.__version__,
            "determinism": determinism,
        },
        "resize": RESIZE_MODE,
    }
    # The card holds only what the inputs determine (no wall time), so retraining the same data
    # with the same params writes the same files and DVC sees the stage's output unchanged.
    return {**save_domain_classifier(model, out_dir, card), "seconds": round(seconds, 2)}


def save_domain_classifier(
    model: DomainCNN, out_dir: str | Path, card: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``model.safetensors`` + ``card.json`` to ``out_dir`` atomically; return the card."""
    out_dir = Path(out_dir)
    card = dict(card or {})
    card.setdefault("name", NAME)
    card["arch"] = model.arch.to_dict()
    card["weights"] = WEIGHTS_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # A single metadata key keeps the file bytes (and so the hash) independent of dict ordering.
    meta = {"ganops": json.dumps({"name": NAME, "arch": card["arch"]}, sort_keys=True)}
    with atomic_dir(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata=meta)
        card["sha256"] = sha256_file(tmp / WEIGHTS_FILE)
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return {**card, "path": str(out_dir)}


class DomainClassifierExtractor(FeatureExtractor):
    """Features = penultimate layer (after ReLU) of a :class:`DomainCNN`; logits = its head."""

    def __init__(
        self,
        model: DomainCNN,
        *,
        sha256: str,
        card: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
    ) -> None:
        super().__init__(device=device, batch_size=batch_size)
        self.model = model.eval().to(self.device)
        self.arch = model.arch
        self.card = card or {}
        self.name = NAME
        self.sha256 = sha256
        h, w = self.arch.input_size
        self.resize = f"{RESIZE_MODE} to {h}x{w} when the input size differs"
        self.feature_dim = self.arch.hidden
        self.num_classes = self.arch.num_classes

    @property
    def test_accuracy(self) -> float | None:
        return self.card.get("test_accuracy")

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return _fit_input(x, self.arch)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.model.features(x)  # (B, hidden)
        return f, self.model.head(f)  # (B, K)


def load_domain_classifier(
    path: str | Path, *, device: str | torch.device = "cpu", batch_size: int = 256
) -> DomainClassifierExtractor:
    """Load a classifier saved by :func:`train_domain_classifier` (its directory or card.json).

    The weights file must match the sha256 recorded in its card.
    """
    path = Path(path)
    folder = path.parent if path.name == CARD_FILE else path
    card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
    if not card_path.is_file() or not weights_path.is_file():
        raise DataError(
            f"{folder} is not a domain classifier directory (needs {CARD_FILE} and {WEIGHTS_FILE}); "
            "train one with train_domain_classifier (`ganops` features stage)"
        )
    try:
        card = json.loads(card_path.read_text())
        arch = DomainCNNArch.from_dict(card["arch"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{card_path}: not a valid domain classifier card ({e})") from None
    digest = sha256_file(weights_path)
    if digest != card.get("sha256"):
        raise DataError(
            f"{weights_path}: sha256 {digest} does not match {card_path}'s {card.get('sha256')}; "
            "the weights were changed or the copy is incomplete"
        )
    model = DomainCNN(arch)
    state = load_file(str(weights_path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DataError(f"{weights_path} does not fit the architecture in its card: {e}") from None
    return DomainClassifierExtractor(
        model, sha256=digest, card=card, device=device, batch_size=batch_size
    )
