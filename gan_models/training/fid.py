"""FID during training: a trainer callback that adds ``fid`` every ``train.fid_every`` steps.

The numbers feed the FID curve (stats.jsonl, ``runs/train/curves/fid.csv``) and the tuning
pruner. Like StyleGAN2-ADA's training loop, the trainer calls the metric: this module uses the
metrics and data layers only (extractor, reference statistics, Fréchet distance), never the
evaluation stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gan_models.data.format import read_imageset
from gan_models.data.splits import ScaledImages, dataset_name, open_split
from gan_models.metrics.config import FeaturesParams
from gan_models.metrics.extractor import FeatureExtractor
from gan_models.metrics.extractors import extractor_for
from gan_models.metrics.fid import feature_statistics, frechet_distance
from gan_models.metrics.reference import reference_stats

if TYPE_CHECKING:
    from gan_models.training.loop import StepInfo
    from gan_models.training.params import TrainParams


@dataclass
class FIDCallback:
    """Adds ``fid`` to the step's metrics every ``every`` steps (EMA generator, fixed seed)."""

    every: int
    n_samples: int
    extractor: FeatureExtractor
    ref_mu: np.ndarray
    ref_sigma: np.ndarray
    seed: int = 12345

    def __call__(self, info: StepInfo) -> None:
        if info.step % self.every and info.step != info.total_steps:
            return
        images, _ = info.generate(self.n_samples, self.seed)
        mu, sigma = feature_statistics(self.extractor.features(images))
        info.metrics["fid"] = frechet_distance(self.ref_mu, self.ref_sigma, mu, sigma)


def fid_callback(params: TrainParams, features: FeaturesParams | None = None) -> FIDCallback:
    """FID during training against the training split, as ``train.fid_every`` asks."""
    t = params.train
    name = dataset_name(params)
    extractor = extractor_for(features or FeaturesParams(), name, t.fid_features)
    root = Path(params.data.path)
    # The reference images are read from disk a batch at a time (to hash them, and on a cache
    # miss to extract their features), so memory does not grow with the split's size.
    if params.data.split:
        real = open_split(root, params.data.split, params.data.image_size).images
    else:
        real = ScaledImages(read_imageset(root, mmap=True).images, params.data.image_size)
    ref = reference_stats(real, extractor, split=f"{name}/{params.data.split or 'all'}")
    return FIDCallback(t.fid_every, t.fid_samples, extractor, ref.mu, ref.sigma)
