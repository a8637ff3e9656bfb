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
from gan_models.families import srgan
from gan_models.family_metrics import super_resolution_metrics, translation_metrics
from gan_models.metrics.config import EvaluateParams, FeaturesParams
from gan_models.metrics.domain_classifier import train_domain_classifier
from gan_models.metrics.evaluate import evaluate_generator, load_extractor, write_evaluation
from gan_models.metrics.extractor import FeatureExtractor
from gan_models.metrics.fid import feature_statistics, frechet_distance
from gan_models.metrics.reference import reference_stats
from gan_models.sampling import RunGenerator
from gan_models.training.batches import to_model_range
from gan_models.training.loop import StepInfo, generate_from_latents, sample_latents
from gan_models.utils.determinism import lineage as determinism_lineage
from gan_models.utils.determinism import pinned_threads
from gan_models.utils.images import interleave_pairs

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
            f"no domain classifier at {classifier}; train it with `ganops features train {dataset}`, "
            "pass --features-dir (e.g. the classifier of the images an unpaired set was made "
            "from, models/features/mnist5k) or choose --extractor inception (needs the Inception "
            "weights)"
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
    gen: RunGenerator,
    extractor: FeatureExtractor,
    ref_mu,
    ref_sigma,
    n: int,
    seed: int,
    data: ImageSet | None = None,
) -> float:
    """FID of the same architecture at its seeded initial weights: the 'no training' end.

    ``data``: where an image-to-image family draws its inputs (the evaluated run's test split).
    """
    torch.manual_seed(gen.params.train.seed)
    fresh = RunGenerator(
        gen.family, gen.params, gen.spec, gen.family.build(gen.params, gen.spec), "untrained"
    )
    images, _ = fresh.generate(n, seed, data=data)
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
    # On CPU the same numbers on any core count (kernels and BLAS split their sums by threads).
    with pinned_threads(torch.device(device).type == "cpu"):
        return _evaluate_run(
            run_dir,
            features=features,
            evaluate=evaluate,
            features_dir=features_dir,
            untrained_baseline=untrained_baseline,
            device=device,
        )


def _evaluate_run(
    run_dir: str | Path,
    *,
    features: FeaturesParams,
    evaluate: EvaluateParams,
    features_dir: str | Path | None,
    untrained_baseline: bool,
    device: str,
) -> dict[str, Any]:
    run_dir = Path(run_dir)
    gen = RunGenerator.from_run_dir(run_dir, device=device)
    params = gen.params
    root = Path(params.data.path)
    size = gen.spec.image_size
    extractor = extractor_for(features, dataset_name(params), features_dir)
    kwargs = evaluate.evaluate_kwargs()
    inputs_from = None  # image-to-image families translate the held-out test split
    extra: dict[str, Any] = {}
    if gen.family.batch_kind == "unpaired":
        # Translation: the metrics table scores a -> b (held-out a against b's splits); the
        # per-direction FIDs and cycle errors go under "translation".
        train_ab, test_ab = (_unpaired_split(root, s, size) for s in ("train", "test"))
        name = dataset_name(params)
        train_split = ImageSet({"images": train_ab["b"]}, None, {"name": f"{name}:b/train"})
        test_split = ImageSet({"images": test_ab["b"]}, None, {"name": f"{name}:b/test"})
        inputs_from = ImageSet({"a": test_ab["a"]}, None, {"kind": "unpaired"})
        kwargs["n_samples"] = min(kwargs["n_samples"], len(test_ab["a"]))
        refs = {
            k: reference_stats(
                train_ab[k],
                extractor,
                split=f"{name}:{k}/train",
                cache_dir=evaluate.cache_dir,
                max_features=evaluate.max_reference_features,
            )
            for k in ("a", "b")
        }
        extra["translation"] = translation_metrics(
            gen.nets,
            torch.from_numpy(test_ab["a"]),
            torch.from_numpy(test_ab["b"]),
            extractor=extractor,
            ref_a=refs["a"],
            ref_b=refs["b"],
        )
    else:
        train_split, test_split = load_split(root, "train", size), load_split(root, "test", size)
        if gen.family.takes_inputs:  # super-resolution of the held-out images
            inputs_from = test_split
            kwargs["n_samples"] = min(kwargs["n_samples"], len(test_split.images))
            hr = torch.from_numpy(test_split.images)  # (N, C, H, W)
            lr = srgan.downsample(hr, params.model.scale)  # what sample_inputs makes of them
            extra["super_resolution"] = super_resolution_metrics(gen.nets, lr, hr)
    n_samples = kwargs["n_samples"]
    result = evaluate_generator(
        lambda n, seed: gen.generate(n, seed, data=inputs_from),
        extractor=extractor,
        real_train=train_split,
        real_test=test_split,
        **kwargs,
    )
    result.update(extra)
    result["lineage"]["determinism"] = determinism_lineage()
    result["summary"].update(_family_summary(extra))
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
        value = untrained_fid(
            gen, extractor, ref.mu, ref.sigma, n_samples, evaluate.seed, data=inputs_from
        )
        result["fid"]["untrained"] = value
        result["summary"]["fid_untrained"] = value
    if inputs_from is None:
        figures = {"interpolation": interpolation_strips(gen)}
    else:  # inputs beside outputs; latent interpolation means nothing for these families
        x = gen.inputs(32, evaluate.seed, data=inputs_from)  # (32, C, h, w)
        y, _ = gen.generate(32, evaluate.seed, data=inputs_from)
        figures = {"samples": interleave_pairs(x, y)}
    write_evaluation(result, run_dir, nrow=evaluate.grid_nrow, **figures)
    return result


def _unpaired_split(root: Path, split: str, size: int) -> dict[str, np.ndarray]:
    """Both domains of a processed unpaired split as float32 [-1, 1] (N, C, size, size)."""
    path = root / split
    if not (path / "meta.json").is_file():
        raise DataError(
            f"{path}: no {split!r} split; evaluating a translation needs a processed unpaired "
            f"dataset with train/test splits (run `ganops data preprocess {root.name}`)"
        )
    ds = read_imageset(path)
    if ds.kind != "unpaired":
        raise DataError(f"{path}: expected an unpaired dataset (arrays a and b), got {ds.kind!r}")
    return {k: to_model_range(ds.arrays[k], size).numpy() for k in ("a", "b")}


def _family_summary(extra: dict[str, Any]) -> dict[str, float]:
    """Flat numbers of the family-specific metrics, for trackers that log scalars."""
    s: dict[str, float] = {}
    sr = extra.get("super_resolution")
    if sr:
        for who in ("generator", "bicubic"):
            s[f"sr_psnr_{who}"] = sr[who]["psnr"]
            s[f"sr_ssim_{who}"] = sr[who]["ssim"]
    for direction, m in (extra.get("translation") or {}).items():
        s[f"fid_{direction}"] = m["fid"]
        s[f"cycle_l1_{direction}"] = m["cycle_l1"]
    return s


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
