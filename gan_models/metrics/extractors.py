"""Which feature extractor an evaluation uses: built from params, or found by dataset name.

``load_extractor`` builds the extractor that ``features`` params name (the trained domain
classifier of a directory, or the FID-standard InceptionV3); ``extractor_for`` finds a dataset's
domain classifier under ``models/features/NAME``, which ``train_features`` (the features stage)
trains. Evaluation, FID during training and the benchmarks all pick their extractor here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gan_models.data.splits import open_split
from gan_models.errors import DataError
from gan_models.metrics.config import FeaturesParams
from gan_models.metrics.domain_classifier import load_domain_classifier, train_domain_classifier
from gan_models.metrics.extractor import FeatureExtractor
from gan_models.metrics.inception import InceptionExtractor

#: Where ``ganops features train NAME`` writes the domain classifier of dataset NAME.
FEATURES_ROOT = Path("models/features")


def load_extractor(
    params: FeaturesParams, *, classifier_dir: str | os.PathLike | None = None
) -> FeatureExtractor:
    """Build the extractor that ``params`` names.

    ``domain`` loads the trained classifier from ``classifier_dir``; ``inception`` resolves its
    weights as :class:`InceptionExtractor` does (a clear error when they cannot be found).
    """
    if params.extractor == "domain":
        if classifier_dir is None:
            raise DataError(
                "features.extractor is 'domain' but no domain classifier directory was given; "
                "train one first (train_domain_classifier) or use features.extractor: inception"
            )
        return load_domain_classifier(
            classifier_dir, device=params.device, batch_size=params.batch_size
        )
    return InceptionExtractor(
        params.inception.weights,
        resize=params.inception.resize,
        download=params.inception.download,
        device=params.device,
        # 299x299 activations: a batch of 64 already takes a few GB.
        batch_size=min(params.batch_size, 64),
    )


def extractor_for(
    params: FeaturesParams, dataset: str, features_dir: str | Path | None = None
) -> FeatureExtractor:
    """The extractor ``params`` name; the domain classifier defaults to models/features/NAME."""
    classifier = Path(features_dir) if features_dir else FEATURES_ROOT / dataset
    if params.extractor == "domain" and not (classifier / "card.json").is_file():
        raise DataError(
            f"no domain classifier at {classifier}; train it with `ganops features train {dataset}`, "
            "pass --features-dir (e.g. the classifier of the images an unpaired set was made "
            "from, models/features/mnist5k) or choose --extractor inception (needs the Inception "
            "weights)"
        )
    return load_extractor(params, classifier_dir=classifier)


def train_features(
    processed_dir: str | Path, params: FeaturesParams, out_dir: str | Path | None = None
) -> dict[str, Any]:
    """Train the domain classifier on a processed dataset's train split, test it on its test split.

    The splits are read from disk a batch at a time (:func:`open_split`): memory does not grow
    with their size, and the weights are those of the splits held in memory.
    """
    processed_dir = Path(processed_dir)
    if not processed_dir.is_dir():
        raise DataError(
            f"{processed_dir} does not exist; run `ganops data preprocess {processed_dir.name}` first"
        )
    out = Path(out_dir) if out_dir else FEATURES_ROOT / processed_dir.name
    d = params.domain
    return train_domain_classifier(
        open_split(processed_dir, "train"),
        open_split(processed_dir, "test"),
        out,
        epochs=d.epochs,
        batch_size=d.batch_size,
        lr=d.lr,
        seed=d.seed,
        device=params.device,
        width=d.width,
        hidden=d.hidden,
    )
