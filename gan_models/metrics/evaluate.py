"""Evaluate a generator: every registered metric, with its lineage, plus the figures.

``evaluate_generator`` draws samples through a ``generate(n, seed)`` callable, computes what the
registered metrics need once (features and logits of the samples, the real splits' reference
statistics from the cache, computed on a miss) and runs each metric of
:mod:`gan_models.metrics.registry` in turn, returning a JSON-ready dict. FID is reported with a
bootstrap interval and next to its real-vs-real floor: the FID of the held-out test split against
the training reference, which is what a perfect generator would score at that sample count.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_models.data.format import ImageSet
from gan_models.errors import DataError
from gan_models.metrics.extractor import FeatureExtractor
from gan_models.metrics.figures import save_grid_png, save_interpolation_png
from gan_models.metrics.images import ArrayLike, as_images
from gan_models.metrics.memorization import save_memorization_figure
from gan_models.metrics.registry import EvalContext, Need, registered_metrics
from gan_models.metrics.report import summary_numbers
from gan_models.utils.io import write_json_atomic

GenerateFn = Callable[[int, int], tuple[ArrayLike, ArrayLike | None]]
METRICS_FILE = "metrics.json"


def _split_name(ds: ImageSet, split: str) -> str:
    name = ds.meta.get("name")
    if not name:
        return split
    return name if name.endswith(f"/{split}") else f"{name}/{split}"  # processed: NAME/split


def _generated(generate: GenerateFn, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray | None]:
    out = generate(n, seed)
    if not isinstance(out, tuple) or len(out) != 2:
        raise DataError("generate(n, seed) must return (images, labels or None)")
    images = as_images(out[0], what="generated images")  # (n, C, H, W)
    if images.shape[0] != n:
        raise DataError(f"generate({n}, {seed}) returned {images.shape[0]} images")
    labels = out[1]
    if labels is not None:
        labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"generated labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}"
            )
    return images, labels


def evaluate_generator(
    generate: GenerateFn,
    *,
    extractor: FeatureExtractor,
    real_train: ImageSet,
    real_test: ImageSet,
    n_samples: int = 5000,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    fid_bootstrap: int = 100,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    kid_seed: int = 2020,
    is_splits: int = 10,
    pr_k: int = 3,
    dc_k: int = 5,
    cas: bool = True,
    cas_epochs: int = 8,
    memorization_samples: int = 1000,
    max_reference_features: int = 10000,
    n_grid: int = 64,
    progress: bool = False,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every registered metric of a generator against a dataset's real splits.

    ``generate(n, seed)`` returns ``(images (n, C, H, W) float in [-1, 1], labels (n,) or None)``.
    The reference split is ``real_train``; ``real_test`` gives the real-vs-real FID floor, the
    CAS test set and the memorisation baseline. Returns a dict with one entry per registered
    metric (None where it does not apply: IS without logits, CAS without labels), each carrying
    its ``lineage`` (extractor name, hash and resize, n_real, n_fake, seed, reference split), a
    flat ``summary`` of numbers for tracking, and ``artifacts`` (arrays for the figures;
    :func:`write_evaluation` leaves them out of metrics.json). The metric settings and
    ``options`` (settings of metrics registered elsewhere) reach the metrics as ``ctx.options``.
    Metrics whose results an image-to-image family supplies (no ``compute``) are left out.
    """
    fake, labels = _generated(generate, n_samples, seed)
    ctx = EvalContext(
        images=fake,
        labels=labels,
        extractor=extractor,
        real_train=real_train,
        real_test=real_test,
        train_split=_split_name(real_train, "train"),
        test_split=_split_name(real_test, "test"),
        seed=seed,
        options={
            "fid_bootstrap": fid_bootstrap,
            "kid_subsets": kid_subsets,
            "kid_subset_size": kid_subset_size,
            "kid_seed": kid_seed,
            "is_splits": is_splits,
            "pr_k": pr_k,
            "dc_k": dc_k,
            "cas": cas,
            "cas_epochs": cas_epochs,
            "memorization_samples": memorization_samples,
            **(options or {}),
        },
        cache_dir=cache_dir,
        max_reference_features=max_reference_features,
        progress=progress,
    )
    metrics = [m for m in registered_metrics() if m.compute is not None]
    # The references always (the result's lineage names them), then the samples' features and
    # logits in one pass if any metric reads them.
    ctx.prepare({Need.REFERENCE, Need.TEST_REFERENCE}.union(*(m.needs for m in metrics)))
    result: dict[str, Any] = {}
    artifacts: dict[str, Any] = {"samples": fake[:n_grid].numpy()}
    for metric in metrics:
        entry = metric.compute(ctx) if ctx.provides(metric.needs) else None
        result[metric.name] = entry
        if entry is not None and metric.artifacts is not None:
            artifacts.update(metric.artifacts(entry, ctx))

    ref, test = ctx.reference, ctx.test_reference
    result["lineage"] = {
        "extractor": extractor.lineage(),
        "seed": seed,
        "reference_split": ctx.train_split,
        "n_fake": n_samples,
        "n_real_train": ref.n,
        "n_real_test": test.n,
        "reference_key": ref.key,
        "test_key": test.key,
        "train_sha256": ref.lineage.get("dataset_sha256"),
        "test_sha256": test.lineage.get("dataset_sha256"),
        "max_reference_features": max_reference_features,
        "generated_shape": list(fake.shape[1:]),
        "conditional": labels is not None,
    }
    result["summary"] = summary_numbers(result)
    result["artifacts"] = artifacts
    return result


def write_evaluation(
    result: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    samples: ArrayLike | None = None,
    interpolation: ArrayLike | None = None,
    nrow: int = 8,
) -> dict[str, Path]:
    """Write ``metrics.json`` and the figures of an evaluation into ``out_dir``, each atomically.

    Figures: ``samples.png`` (grid of ``samples``, else the result's own samples),
    ``interpolation.png`` (when ``interpolation`` (S, C, H, W) or (R, S, C, H, W) is given) and
    ``nearest_neighbours.png`` (closest generated/training pairs). Returns name -> path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    metrics = {k: v for k, v in result.items() if k != "artifacts"}
    write_json_atomic(out / METRICS_FILE, metrics)
    paths["metrics"] = out / METRICS_FILE
    art = result.get("artifacts", {})
    grid = samples if samples is not None else art.get("samples")
    if grid is not None:
        paths["samples"] = save_grid_png(grid, out / "samples.png", nrow=nrow)
    if interpolation is not None:
        paths["interpolation"] = save_interpolation_png(interpolation, out / "interpolation.png")
    if art.get("nearest_fake") is not None and len(art["nearest_fake"]):
        mem = {
            "closest_pairs": {
                "fake_index": list(range(len(art["nearest_fake"]))),
                "train_index": list(range(len(art["nearest_train"]))),
                "pixel_distance": art["nearest_distance"],
            }
        }
        paths["nearest_neighbours"] = save_memorization_figure(
            mem, art["nearest_fake"], art["nearest_train"], out / "nearest_neighbours.png"
        )
    return paths
