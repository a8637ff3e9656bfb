"""Evaluation metrics for generators: one file per metric, each a pure function over features.

``METRICS`` maps a metric's name to its function. Features come from a
:class:`~gan_models.metrics.extractor.FeatureExtractor` (the domain classifier or the FID
InceptionV3); :func:`~gan_models.metrics.evaluate.evaluate_generator` runs them all with lineage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gan_models.metrics.cas import classification_accuracy_score
from gan_models.metrics.density_coverage import density_coverage
from gan_models.metrics.fid import fid_bootstrap_ci, fid_from_features, frechet_distance
from gan_models.metrics.inception_score import inception_score
from gan_models.metrics.kid import kid_from_features
from gan_models.metrics.memorization import memorization
from gan_models.metrics.precision_recall import precision_recall

#: metric name -> function. FID, KID, PR and DC take (real features, fake features); IS takes
#: logits; CAS takes generated images and labels plus the real test split; memorisation takes
#: images and features (see each function's docstring).
METRICS: dict[str, Callable[..., Any]] = {
    "fid": fid_from_features,
    "kid": kid_from_features,
    "is": inception_score,
    "precision_recall": precision_recall,
    "density_coverage": density_coverage,
    "cas": classification_accuracy_score,
    "memorization": memorization,
}

__all__ = [
    "METRICS",
    "classification_accuracy_score",
    "density_coverage",
    "fid_bootstrap_ci",
    "fid_from_features",
    "frechet_distance",
    "inception_score",
    "kid_from_features",
    "memorization",
    "precision_recall",
]
