"""Evaluation stages over runs and datasets: the glue between runs, datasets and ``metrics``.

``train_features`` trains the domain classifier of a processed dataset, ``evaluate_run`` scores a
training run folder (metrics.json + figures), and ``FIDCallback`` gives the trainer FID every k
steps (for curves and for pruning). The metric maths lives in ``gan_models.metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_models.config import TrainParams
from gan_models.data.format import ImageSet, read_imageset
from gan_models.errors import DataError
from gan_models.metrics.config import EvaluateParams, FeaturesParams
from gan_models.metrics.domain_classifier import train_domain_classifier
from gan_models.metrics.evaluate import evaluate_generator, load_extractor, write_evaluation
from gan_models.metrics.extractor import FeatureExtractor
from gan_models.metrics.fid import feature_statistics, frechet_distance
from gan_models.metrics.reference import reference_stats
from gan_models.sampling import RunGenerator
from gan_models.training.batches import to_model_range
from gan_models.training.loop import StepInfo, generate_from_latents, sample_latents

FEATURES_ROOT = Path("models/features")


def dataset_name(params: TrainParams) -> str:
    """The dataset a run trained on: the name of its data directory (``data/processed/NAME``)."""
    return Path(params.data.path).name


def load_split(root: str | Path, split: str, image_size: int | None = None) -> ImageSet:
    """A processed split as float32 [-1, 1] images, resized like the trainer resizes them."""
    path = Path(root) / split
    if not (path / "meta.json").is_file():
        raise DataError(
            f"{path}: no {split!r} split; evaluation needs a processed dataset with train/test "
            f"splits (run `ganops data preprocess {Path(root).name}`)"
        )
    ds = read_imageset(path)
    images = to_model_range(ds.images, image_size).numpy()  # (N, C, S, S)
    return ImageSet({"images": images}, ds.labels, ds.meta)


def train_features(
    processed_dir: str | Path, params: FeaturesParams, out_dir: str | Path | None = None
) -> dict[str, Any]:
    """Train the domain classifier on a processed dataset's train split, test it on its test split."""
    processed_dir = Path(processed_dir)
    if not processed_dir.is_dir():
        raise DataError(
            f"{processed_dir} does not exist; run `ganops data preprocess {processed_dir.name}` first"
        )
    out = Path(out_dir) if out_dir else FEATURES_ROOT / processed_dir.name
    d = params.domain
    return train_domain_classifier(
        load_split(processed_dir, "train"),
        load_split(processed_dir, "test"),
        out,
        epochs=d.epochs,
        batch_size=d.batch_size,
        lr=d.lr,
        seed=d.seed,
        device=params.device,
        width=d.width,
        hidden=d.hidden,
    )


def extractor_for(
    params: FeaturesParams, dataset: str, features_dir: str | Path | None = None
) -> FeatureExtractor:
    """The extractor ``params`` name; the domain classifier defaults to models/features/NAME."""
    classifier = Path(features_dir) if features_dir else FEATURES_ROOT / dataset
    if params.extractor == "domain" and not (classifier / "card.json").is_file():
        raise DataError(
            f"no domain classifier at {classifier}; train it with `ganops features train {dataset}` "
            "or choose --extractor inception (needs the Inception weights)"
        )
    return load_extractor(params, classifier_dir=classifier)


def interpolation_strips(
    gen: RunGenerator, rows: int = 4, steps: int = 10, seed: int = 0
) -> torch.Tensor:
    """Linear paths between pairs of latents: (rows, steps, C, H, W)."""
    z = sample_latents(2 * rows, gen.params.model.latent_dim, seed).view(rows, 2, -1)  # (R, 2, Z)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    path = (1 - t) * z[:, :1] + t * z[:, 1:]  # (R, S, Z)
    labels = None
    if gen.family.conditional:
        labels = (torch.arange(rows) % (gen.spec.num_classes or 1)).repeat_interleave(steps)
    images = generate_from_latents(gen.family, gen.nets, path.reshape(rows * steps, -1), labels)
    return images.view(rows, steps, *images.shape[1:])


def untrained_fid(
    gen: RunGenerator, extractor: FeatureExtractor, ref_mu, ref_sigma, n: int, seed: int
) -> float:
    """FID of the same architecture at its seeded initial weights: the 'no training' end."""
    torch.manual_seed(gen.params.train.seed)
    fresh = RunGenerator(
        gen.family, gen.params, gen.spec, gen.family.build(gen.params, gen.spec), "untrained"
    )
    images, _ = fresh.generate(n, seed)
    return frechet_distance(ref_mu, ref_sigma, *feature_statistics(extractor.features(images)))


def evaluate_run(
    run_dir: str | Path,
    *,
    features: FeaturesParams,
    evaluate: EvaluateParams,
    features_dir: str | Path | None = None,
    untrained_baseline: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score a run's (EMA) generator against its dataset; write metrics.json and the figures."""
    run_dir = Path(run_dir)
    gen = RunGenerator.from_run_dir(run_dir, device=device)
    params = gen.params
    root = Path(params.data.path)
    size = gen.spec.image_size
    train_split, test_split = load_split(root, "train", size), load_split(root, "test", size)
    extractor = extractor_for(features, dataset_name(params), features_dir)
    result = evaluate_generator(
        lambda n, seed: gen.generate(n, seed),
        extractor=extractor,
        real_train=train_split,
        real_test=test_split,
        **evaluate.evaluate_kwargs(),
    )
    result["run"] = {
        "family": gen.family.name,
        "dataset": dataset_name(params),
        "params_digest": params.digest(),
        "weights": Path(gen.source).name,
    }
    if untrained_baseline:
        ref = reference_stats(
            train_split.images,
            extractor,
            split=f"{dataset_name(params)}/train",
            cache_dir=evaluate.cache_dir,
            max_features=evaluate.max_reference_features,
        )
        value = untrained_fid(gen, extractor, ref.mu, ref.sigma, evaluate.n_samples, evaluate.seed)
        result["fid"]["untrained"] = value
        result["summary"]["fid_untrained"] = value
    write_evaluation(
        result, run_dir, interpolation=interpolation_strips(gen), nrow=evaluate.grid_nrow
    )
    return result


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
    if params.data.split:
        real = load_split(root, params.data.split, params.data.image_size)
    else:
        ds = read_imageset(root)
        real = ImageSet(
            {"images": to_model_range(ds.images, params.data.image_size).numpy()}, None, ds.meta
        )
    ref = reference_stats(real.images, extractor, split=f"{name}/{params.data.split or 'all'}")
    return FIDCallback(t.fid_every, t.fid_samples, extractor, ref.mu, ref.sigma)
