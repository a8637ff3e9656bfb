"""The feature-extractor interface that every metric reads its features through.

An extractor maps images in [-1, 1] of shape (N, C, H, W) to features (N, D) float64 (for FID,
KID, precision/recall, density/coverage, memorisation) and logits (N, K) float64 (for IS). Each
one states its name, the sha256 of its weights and how it resizes inputs, so that every metric
result can carry that lineage.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from gan_models.errors import DataError
from gan_models.metrics.images import ImagesLike, image_batches


class FeatureExtractor(abc.ABC):
    """Batched, device-aware image -> (features, logits) map with a stated identity."""

    #: short stable name, e.g. ``"domain-cnn"`` or ``"inception-v3-fid"``
    name: str
    #: sha256 of the weights file: changes whenever the network does
    sha256: str
    #: how inputs of another size reach the network, in words (part of every result's lineage)
    resize: str
    #: feature dimension D
    feature_dim: int
    #: number of logits K, or None when the extractor has no classifier head
    num_classes: int | None

    def __init__(self, *, device: str | torch.device = "cpu", batch_size: int = 256) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)

    @abc.abstractmethod
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Map one batch (B, C, H, W) float32 in [-1, 1] (on CPU) to the network's input."""

    @abc.abstractmethod
    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the network on a prepared batch; return features (B, D) and logits (B, K) or None."""

    def lineage(self) -> dict[str, Any]:
        """Identity of this extractor as it appears in metric results."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "resize": self.resize,
            "feature_dim": self.feature_dim,
        }

    @torch.inference_mode()
    def features_and_logits(
        self, x: ImagesLike, *, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Features (N, D) and logits (N, K) (None without a head), both float64, in one pass."""
        # (B, C, H, W) in [-1, 1]; a split opened from disk is read one batch at a time.
        batches = image_batches(x, self.batch_size)
        total = -(-int(x.shape[0]) // self.batch_size)
        feats, logits = [], []
        for images in tqdm(batches, total=total, disable=not progress, desc=self.name, leave=False):
            batch = self._prepare(images)
            f, lg = self._forward(batch.to(self.device))
            feats.append(f.to("cpu", torch.float64).numpy())
            if lg is not None:
                logits.append(lg.to("cpu", torch.float64).numpy())
        return np.concatenate(feats), (np.concatenate(logits) if logits else None)

    def features(self, x: ImagesLike, *, progress: bool = False) -> np.ndarray:
        """Features (N, D) float64 of images in [-1, 1]."""
        return self.features_and_logits(x, progress=progress)[0]

    def logits(self, x: ImagesLike, *, progress: bool = False) -> np.ndarray:
        """Classifier logits (N, K) float64 of images in [-1, 1] (the input to IS)."""
        if self.num_classes is None:
            raise DataError(f"feature extractor {self.name!r} has no classifier head for IS")
        logits = self.features_and_logits(x, progress=progress)[1]
        assert logits is not None
        return logits

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, sha256={self.sha256[:12]}, resize={self.resize!r})"
