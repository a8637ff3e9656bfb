"""Evaluation metrics for generators: one file per metric, each registering itself.

Each metric file holds the pure function over features and registers a
:class:`~gan_models.metrics.registry.Metric` (what it needs, how it computes its result, its
summary numbers and table rows) in ``METRICS``. Features come from a
:class:`~gan_models.metrics.extractor.FeatureExtractor` (the domain classifier or the FID
InceptionV3); :func:`~gan_models.metrics.evaluate.evaluate_generator` runs every registered
metric with its lineage, and :mod:`gan_models.metrics.report` renders the results.
"""

from __future__ import annotations

# Importing a metric's file registers it: the built-ins in this order, which is the order of
# metrics.json's entries and of every table. A metric added elsewhere comes after them.
# isort: off
from gan_models.metrics.fid import fid_bootstrap_ci, fid_from_features, frechet_distance
from gan_models.metrics.kid import kid_from_features
from gan_models.metrics.precision_recall import precision_recall
from gan_models.metrics.density_coverage import density_coverage
from gan_models.metrics.inception_score import inception_score
from gan_models.metrics.cas import classification_accuracy_score
from gan_models.metrics.memorization import memorization
from gan_models.metrics.image_to_image import super_resolution_metrics, translation_metrics
from gan_models.metrics.paired_translation import paired_translation_metrics

# isort: on
from gan_models.metrics.registry import (
    METRICS,
    EvalContext,
    Metric,
    Need,
    register_metric,
    registered_metrics,
    unregister_metric,
)

__all__ = [
    "METRICS",
    "EvalContext",
    "Metric",
    "Need",
    "classification_accuracy_score",
    "density_coverage",
    "fid_bootstrap_ci",
    "fid_from_features",
    "frechet_distance",
    "inception_score",
    "kid_from_features",
    "memorization",
    "paired_translation_metrics",
    "precision_recall",
    "register_metric",
    "registered_metrics",
    "super_resolution_metrics",
    "translation_metrics",
    "unregister_metric",
]
