"""Memorisation check: how close generated samples come to their nearest training images.

Two distances per generated sample, both Euclidean to the nearest training image:

* feature space: between extractor features (the same features as FID);
* pixel space: between the images themselves, flattened, with pixels in [-1, 1].

Both are compared with the same distances for held-out real images (the test split), which were
never trained on: a generator whose samples sit much closer to the training set than unseen real
images do (``ratio_to_test`` well below 1) is copying rather than generalising.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gan_models.errors import DataError
from gan_models.metrics.figures import save_nearest_pairs_figure
from gan_models.metrics.images import ArrayLike, as_images
from gan_models.metrics.neighbours import as_features, nearest
from gan_models.metrics.registry import EvalContext, Metric, Need, fmt, register_metric


def _flat_pixels(x: ArrayLike, what: str) -> np.ndarray:
    # float32 keeps a large training split at its stored size; scikit-learn upcasts per chunk.
    return as_images(x, what=what).reshape(len(x), -1).numpy()  # (N, C*H*W)


def _summary(d: np.ndarray, baseline: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "min": float(d.min()),
        "p05": float(np.quantile(d, 0.05)),
        "median": float(np.median(d)),
        "mean": float(d.mean()),
    }
    if baseline is not None:
        out["test_median"] = float(np.median(baseline))
        out["test_p05"] = float(np.quantile(baseline, 0.05))
        out["ratio_to_test"] = (
            out["median"] / out["test_median"] if out["test_median"] > 0 else None
        )
    return out


def memorization(
    fake_images: ArrayLike,
    train_images: ArrayLike,
    *,
    fake_features: Any,
    train_features: Any,
    test_images: ArrayLike | None = None,
    test_features: Any = None,
    n_pairs: int = 8,
) -> dict[str, Any]:
    """Nearest-training-image distances of generated samples, in feature and pixel space.

    Images are (N, C, H, W) in [-1, 1]; ``fake_features`` (M, D) are rows of ``fake_images``
    and ``train_features`` (N', D) rows of the training images used for the feature space (may be
    a subset; its size is reported). Returns per-space summaries (min, p05, median, mean, and with
    a test split its median and ``ratio_to_test``) and the ``n_pairs`` closest pairs in pixel space.
    """
    fp = _flat_pixels(fake_images, "generated images")
    tp = _flat_pixels(train_images, "training images")
    if fp.shape[1] != tp.shape[1]:
        raise DataError(
            f"generated images {tuple(fake_images.shape[1:])} and training images "
            f"{tuple(train_images.shape[1:])} differ in shape; pixel distances need equal shapes"
        )
    ff = as_features(fake_features, "generated features")
    tf = as_features(train_features, "training features")
    if ff.shape[0] != fp.shape[0]:
        raise DataError(f"{fp.shape[0]} generated images but {ff.shape[0]} feature rows")
    pix_d, pix_i = nearest(fp, tp)  # (M,), (M,)
    feat_d, _ = nearest(ff, tf)  # (M,)
    base_pix = base_feat = None
    if test_images is not None:
        base_pix, _ = nearest(_flat_pixels(test_images, "test images"), tp)
    if test_features is not None:
        base_feat, _ = nearest(as_features(test_features, "test features"), tf)
    order = np.argsort(pix_d)[: min(n_pairs, len(pix_d))]
    return {
        "feature": {**_summary(feat_d, base_feat), "n_train": int(tf.shape[0])},
        "pixel": {**_summary(pix_d, base_pix), "n_train": int(tp.shape[0]), "scale": "[-1, 1]"},
        "n_fake": int(fp.shape[0]),
        "n_test": None if test_images is None else int(len(test_images)),
        "closest_pairs": {
            "fake_index": order.tolist(),
            "train_index": pix_i[order].tolist(),
            "pixel_distance": pix_d[order].tolist(),
            "feature_distance": feat_d[order].tolist(),
        },
    }


def save_memorization_figure(
    result: dict[str, Any],
    fake_images: ArrayLike,
    train_images: ArrayLike,
    path: str | os.PathLike,
) -> Path:
    """Draw the closest pairs of a :func:`memorization` result (generated above training)."""
    pairs = result["closest_pairs"]
    fake = np.asarray(as_images(fake_images))[pairs["fake_index"]]
    train = np.asarray(as_images(train_images))[pairs["train_index"]]
    return save_nearest_pairs_figure(
        fake,
        train,
        pairs["pixel_distance"],
        path,
        title="closest generated samples (top) and their nearest training images (bottom)",
        space="pixel L2, pixels in [-1, 1]",
    )


# ---------------------------------------------------------------- registered metric


def evaluate_memorization(ctx: EvalContext) -> dict[str, Any]:
    """Nearest training images of the first ``memorization_samples`` generated samples, with
    as many stored test-split rows as the baseline.

    Both spaces search the reference's stored rows of the train split (all of it up to
    ``max_reference_features`` images, else that seeded subset), so the training images held
    in memory are bounded by that size, not the split's; ``train_index`` are rows of the split.
    """
    m = min(ctx.options["memorization_samples"], ctx.n_samples)
    ref, test = ctx.reference, ctx.test_reference
    mem = memorization(
        ctx.images[:m],
        ctx.real_train.images[ref.indices],
        fake_features=ctx.features[:m],
        train_features=ref.features,
        test_images=ctx.real_test.images[test.indices[:m]],
        test_features=test.features[:m],
    )
    pairs = mem["closest_pairs"]
    pairs["train_index"] = [int(ref.indices[i]) for i in pairs["train_index"]]
    return {**mem, "lineage": ctx.lineage(len(ref.indices), m)}


def memorization_artifacts(r: dict[str, Any], ctx: EvalContext) -> dict[str, Any]:
    """The closest (generated, training) pairs, for the nearest-neighbours figure."""
    pairs = r["closest_pairs"]
    return {
        "nearest_fake": ctx.images[pairs["fake_index"]].numpy(),
        "nearest_train": np.asarray(as_images(ctx.real_train.images[pairs["train_index"]])),
        "nearest_distance": pairs["pixel_distance"],
    }


def memorization_summary(r: dict[str, Any]) -> dict[str, float]:
    s = {f"memorization_{space}_median": r[space]["median"] for space in ("pixel", "feature")}
    for space in ("pixel", "feature"):
        ratio = r[space].get("ratio_to_test")
        if ratio is not None:
            s[f"memorization_{space}_ratio"] = ratio
    return s


def memorization_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for space in ("pixel", "feature"):
        m = r.get(space) or {}
        if m.get("median") is None:
            continue
        rows.append(
            (
                f"NN dist ({space})",
                f"median {fmt(m['median'])}",
                f"min {fmt(m.get('min'))}; test median {fmt(m.get('test_median'))}; "
                f"ratio {fmt(m.get('ratio_to_test'), 3)}",
            )
        )
    return rows


MEMORIZATION = register_metric(
    Metric(
        "memorization",
        evaluate_memorization,
        needs={
            Need.IMAGES,
            Need.FEATURES,
            Need.REFERENCE,
            Need.TEST_REFERENCE,
            Need.REAL_TRAIN,
            Need.REAL_TEST,
        },
        summary=memorization_summary,
        rows=memorization_rows,
        artifacts=memorization_artifacts,
        function=memorization,
        description="distances of generated samples to their nearest training images",
    )
)
