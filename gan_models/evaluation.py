"""Evaluation stages over runs and datasets: the glue between runs, datasets and ``metrics``.

``evaluate_run`` scores a training run folder (metrics.json + figures). What a run is scored on comes from its
family: the processed train/test splits and latents by default, or the family's evaluation plan
(``Family.evaluation``: image-to-image families give held-out inputs and their own metrics). The
metric maths lives in ``gan_models.metrics``; FID during training in ``gan_models.training.fid``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gan_models.data.format import ImageSet
from gan_models.data.splits import dataset_name, open_split
from gan_models.families.base import EvaluationPlan
from gan_models.metrics.config import EvaluateParams, FeaturesParams
from gan_models.metrics.evaluate import evaluate_generator, write_evaluation
from gan_models.metrics.extractor import FeatureExtractor
from gan_models.metrics.extractors import extractor_for
from gan_models.metrics.fid import feature_statistics, frechet_distance
from gan_models.metrics.reference import reference_stats
from gan_models.metrics.registry import METRICS
from gan_models.metrics.report import summary_numbers
from gan_models.sampling import RunGenerator
from gan_models.training.generate import generate_from_latents, sample_latents
from gan_models.utils.determinism import lineage as determinism_lineage
from gan_models.utils.determinism import pinned_threads
from gan_models.utils.images import interleave_pairs


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


def evaluation_plan(
    gen: RunGenerator, extractor: FeatureExtractor, evaluate: EvaluateParams
) -> EvaluationPlan:
    """What a run is scored on: its family's plan, else the processed train/test splits (latents)."""
    if gen.family.evaluation is not None:
        plan = gen.family.evaluation(gen.params, gen.spec, gen.nets, extractor, evaluate)
    else:
        root, size = gen.params.data.path, gen.spec.image_size
        # Read from disk a batch at a time (reference statistics, CAS's test set).
        plan = EvaluationPlan(open_split(root, "train", size), open_split(root, "test", size))
    unknown = sorted(set(plan.metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"{gen.family.name}: evaluation plan gives unregistered metrics {unknown}")
    return plan


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
    extractor = extractor_for(features, dataset_name(params), features_dir)
    plan = evaluation_plan(gen, extractor, evaluate)
    kwargs = evaluate.evaluate_kwargs()
    if plan.max_samples is not None:  # e.g. each held-out input once
        kwargs["n_samples"] = min(kwargs["n_samples"], plan.max_samples)
    n_samples = kwargs["n_samples"]
    result = evaluate_generator(
        lambda n, seed: gen.generate(n, seed, data=plan.inputs),
        extractor=extractor,
        real_train=plan.real_train,
        real_test=plan.real_test,
        **kwargs,
    )
    result.update(plan.metrics)
    result["lineage"]["determinism"] = determinism_lineage()
    result["run"] = {
        "family": gen.family.name,
        "dataset": dataset_name(params),
        "params_digest": params.digest(),
        "weights": Path(gen.source).name,
    }
    if untrained_baseline:
        ref = reference_stats(
            plan.real_train.images,
            extractor,
            split=f"{dataset_name(params)}/train",
            cache_dir=evaluate.cache_dir,
            max_features=evaluate.max_reference_features,
        )
        result["fid"]["untrained"] = untrained_fid(
            gen, extractor, ref.mu, ref.sigma, n_samples, evaluate.seed, data=plan.inputs
        )
    result["summary"] = summary_numbers(result)  # with the plan's metrics and the baseline
    if plan.inputs is None:
        figures = {"interpolation": interpolation_strips(gen)}
    else:  # inputs beside outputs; latent interpolation means nothing for these families
        x = gen.inputs(32, evaluate.seed, data=plan.inputs)  # (32, C, h, w)
        y, _ = gen.generate(32, evaluate.seed, data=plan.inputs)
        figures = {"samples": interleave_pairs(x, y)}
    write_evaluation(result, run_dir, nrow=evaluate.grid_nrow, **figures)
    return result
