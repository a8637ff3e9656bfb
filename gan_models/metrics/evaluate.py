"""Evaluate a generator: every metric, with its lineage, plus the figures of an evaluation.

``evaluate_generator`` draws samples through a ``generate(n, seed)`` callable, extracts features
once, reads the real splits' reference statistics from the cache (computing them on a miss) and
returns a JSON-ready dict. FID is reported with a bootstrap interval and next to its real-vs-real
floor: the FID of the held-out test split against the training reference, which is what a perfect
generator would score at that sample count.
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
from gan_models.metrics.cas import classification_accuracy_score
from gan_models.metrics.config import FeaturesParams
from gan_models.metrics.density_coverage import density_coverage
from gan_models.metrics.domain_classifier import load_domain_classifier
from gan_models.metrics.extractor import FeatureExtractor
from gan_models.metrics.fid import feature_statistics, fid_bootstrap_ci, frechet_distance
from gan_models.metrics.figures import save_grid_png, save_interpolation_png
from gan_models.metrics.images import ArrayLike, as_images
from gan_models.metrics.inception import InceptionExtractor
from gan_models.metrics.inception_score import inception_score
from gan_models.metrics.kid import kid_from_features
from gan_models.metrics.memorization import memorization, save_memorization_figure
from gan_models.metrics.precision_recall import precision_recall
from gan_models.metrics.reference import reference_stats
from gan_models.utils.io import write_json_atomic

GenerateFn = Callable[[int, int], tuple[ArrayLike, ArrayLike | None]]
METRICS_FILE = "metrics.json"


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


def _subset(rows: np.ndarray, m: int, seed: int) -> np.ndarray:
    if m >= rows.shape[0]:
        return rows
    return rows[np.sort(np.random.default_rng(seed).choice(rows.shape[0], m, replace=False))]


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
) -> dict[str, Any]:
    """All metrics of a generator against a dataset's real splits.

    ``generate(n, seed)`` returns ``(images (n, C, H, W) float in [-1, 1], labels (n,) or None)``.
    The reference split is ``real_train``; ``real_test`` gives the real-vs-real FID floor, the
    CAS test set and the memorisation baseline. Returns a dict with one entry per metric, each
    carrying its ``lineage`` (extractor name, hash and resize, n_real, n_fake, seed, reference
    split), a flat ``summary`` of numbers for tracking, and ``artifacts`` (arrays for the figures;
    :func:`write_evaluation` leaves them out of metrics.json). CAS runs when labels are returned.
    """
    fake, labels = _generated(generate, n_samples, seed)
    train_split, test_split = _split_name(real_train, "train"), _split_name(real_test, "test")
    ref_kw = {"cache_dir": cache_dir, "max_features": max_reference_features, "progress": progress}
    ref = reference_stats(real_train.images, extractor, split=train_split, **ref_kw)
    test = reference_stats(real_test.images, extractor, split=test_split, **ref_kw)
    fake_f, fake_logits = extractor.features_and_logits(fake, progress=progress)  # (n, D), (n, K)
    d = fake_f.shape[1]

    base = {"extractor": extractor.lineage(), "seed": seed, "reference_split": train_split}

    def lineage(n_real: int | None, n_fake: int, **extra: Any) -> dict[str, Any]:
        return {**base, "n_real": n_real, "n_fake": n_fake, **extra}

    # FID against the whole training split's statistics, and the floor at the test split's size.
    mu_f, sigma_f = feature_statistics(fake_f)
    fid = frechet_distance(ref.mu, ref.sigma, mu_f, sigma_f)
    n_floor = min(n_samples, test.features.shape[0])
    floor_rows = _subset(test.features, n_floor, seed)
    floor = frechet_distance(ref.mu, ref.sigma, *feature_statistics(floor_rows))
    fid_same_n = frechet_distance(ref.mu, ref.sigma, *feature_statistics(fake_f[:n_floor]))
    result: dict[str, Any] = {
        "fid": {
            "value": fid,
            "ci95": fid_bootstrap_ci(ref.mu, ref.sigma, fake_f, n_boot=fid_bootstrap, seed=seed),
            "floor": {"value": floor, "split": test_split, "n_real_test": n_floor},
            "value_at_floor_n": fid_same_n,
            "singular_covariance": n_samples <= d or ref.n <= d,
            "lineage": lineage(ref.n, n_samples),
        }
    }

    # KID, precision/recall and density/coverage use the stored feature subset of the reference.
    result["kid"] = {
        **kid_from_features(
            ref.features, fake_f, subsets=kid_subsets, subset_size=kid_subset_size, seed=kid_seed
        ),
        "lineage": lineage(ref.features.shape[0], n_samples),
    }
    real_pr = _subset(ref.features, n_samples, seed)  # equal set sizes, as PRDC recommends
    result["precision_recall"] = {
        **precision_recall(real_pr, fake_f, k=pr_k),
        "lineage": lineage(real_pr.shape[0], n_samples),
    }
    result["density_coverage"] = {
        **density_coverage(real_pr, fake_f, k=dc_k),
        "lineage": lineage(real_pr.shape[0], n_samples),
    }

    if fake_logits is not None:
        is_real = None
        if test.logits is not None and test.logits.shape[0] >= is_splits:
            is_real = inception_score(test.logits, splits=is_splits)
        result["is"] = {
            **inception_score(fake_logits, splits=is_splits),
            "real_test": is_real,
            "lineage": lineage(
                None, n_samples, real_test_n=None if is_real is None else is_real["n"]
            ),
        }
    else:
        result["is"] = None

    result["cas"] = None
    if cas and labels is not None:
        k = real_test.num_classes or extractor.num_classes
        real_acc = getattr(extractor, "test_accuracy", None)
        result["cas"] = {
            **classification_accuracy_score(
                fake,
                labels,
                real_test.images,
                real_test.labels,
                num_classes=k,
                epochs=cas_epochs,
                seed=seed,
                device=str(extractor.device),
            ),
            "real_data_accuracy": real_acc,
            "lineage": {
                **lineage(int(real_test.images.shape[0]), n_samples),
                "test_split": test_split,
            },
        }

    m = min(memorization_samples, n_samples)
    test_rows = test.indices[:m]
    mem = memorization(
        fake[:m],
        real_train.images,
        fake_features=fake_f[:m],
        train_features=ref.features,
        test_images=real_test.images[test_rows],
        test_features=test.features[:m],
    )
    result["memorization"] = {**mem, "lineage": lineage(int(real_train.images.shape[0]), m)}
    pairs = mem["closest_pairs"]

    result["lineage"] = {
        **base,
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
    result["summary"] = _summary(result)
    result["artifacts"] = {
        "samples": fake[:n_grid].numpy(),
        "nearest_fake": fake[pairs["fake_index"]].numpy(),
        "nearest_train": np.asarray(as_images(real_train.images[pairs["train_index"]])),
        "nearest_distance": pairs["pixel_distance"],
    }
    return result


def _summary(r: dict[str, Any]) -> dict[str, float]:
    """Flat name -> number view of a result, for trackers that log scalars."""
    s = {
        "fid": r["fid"]["value"],
        "fid_ci_low": r["fid"]["ci95"]["low"],
        "fid_ci_high": r["fid"]["ci95"]["high"],
        "fid_floor": r["fid"]["floor"]["value"],
        "fid_at_floor_n": r["fid"]["value_at_floor_n"],
        "kid_mean": r["kid"]["mean"],
        "kid_std": r["kid"]["std"],
        "precision": r["precision_recall"]["precision"],
        "recall": r["precision_recall"]["recall"],
        "density": r["density_coverage"]["density"],
        "coverage": r["density_coverage"]["coverage"],
        "memorization_pixel_median": r["memorization"]["pixel"]["median"],
        "memorization_feature_median": r["memorization"]["feature"]["median"],
    }
    if r["is"] is not None:
        s["is_mean"], s["is_std"] = r["is"]["mean"], r["is"]["std"]
    if r["cas"] is not None:
        s["cas"] = r["cas"]["accuracy"]
    for space in ("pixel", "feature"):
        ratio = r["memorization"][space].get("ratio_to_test")
        if ratio is not None:
            s[f"memorization_{space}_ratio"] = ratio
    return s


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


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _family_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Rows of the image-to-image families' own metrics (gan_models.family_metrics)."""
    rows = []
    sr = r.get("super_resolution")
    if sr:
        for m in ("psnr", "ssim"):
            gain = sr[f"{m}_gain"]
            rows.append(
                (
                    f"{m.upper()} (SR)",
                    _fmt(sr["generator"][m]),
                    f"bicubic {_fmt(sr['bicubic'][m])}; difference {gain:+.4g}; "
                    f"x{sr['scale']}, {sr['n']} held-out images",
                )
            )
    for direction, m in (r.get("translation") or {}).items():
        arrow = direction.replace("_to_", "->").upper()
        rows.append(
            (
                f"FID {arrow}",
                _fmt(m["fid"]),
                f"floor {_fmt(m['fid_floor'])}; untranslated inputs {_fmt(m['fid_untranslated'])}; "
                f"{m['n_inputs']} held-out inputs vs the target's reference",
            )
        )
        rows.append((f"cycle L1 {arrow}", _fmt(m["cycle_l1"]), "mean |x - G_back(G_forth(x))|"))
    return rows


def format_metrics_table(result: dict[str, Any]) -> str:
    """A plain-text table of an evaluation result, with its lineage underneath."""
    r = result
    rows: list[tuple[str, str, str]] = []
    fid = r["fid"]
    ci = fid["ci95"]
    rows.append(
        (
            "FID",
            f"{_fmt(fid['value'])} [{_fmt(ci['low'])}, {_fmt(ci['high'])}]",
            f"95% bootstrap CI, n_fake={fid['lineage']['n_fake']} vs n_real={fid['lineage']['n_real']}",
        )
    )
    rows.append(
        (
            "FID floor",
            _fmt(fid["floor"]["value"]),
            f"{fid['floor']['split']} (n={fid['floor']['n_real_test']}) vs reference; "
            f"generated at that n: {_fmt(fid['value_at_floor_n'])}",
        )
    )
    kid = r["kid"]
    rows.append(
        (
            "KID",
            f"{_fmt(kid['mean'])} ± {_fmt(kid['std'], 2)}",
            f"{kid['subsets']} subsets of {kid['subset_size']}",
        )
    )
    if r.get("is"):
        real = r["is"].get("real_test")
        note = f"{r['is']['splits']} splits" + (f"; real test {_fmt(real['mean'])}" if real else "")
        rows.append(("IS", f"{_fmt(r['is']['mean'])} ± {_fmt(r['is']['std'], 2)}", note))
    pr, dc = r["precision_recall"], r["density_coverage"]
    rows.append(("precision", _fmt(pr["precision"]), f"k={pr['k']}"))
    rows.append(("recall", _fmt(pr["recall"]), f"k={pr['k']}"))
    rows.append(("density", _fmt(dc["density"]), f"k={dc['k']}"))
    rows.append(("coverage", _fmt(dc["coverage"]), f"k={dc['k']}"))
    if r.get("cas"):
        rows.append(
            (
                "CAS",
                _fmt(r["cas"]["accuracy"]),
                f"real-data classifier: {_fmt(r['cas'].get('real_data_accuracy'))}",
            )
        )
    mem = r["memorization"]
    for space in ("pixel", "feature"):
        m = mem[space]
        rows.append(
            (
                f"NN dist ({space})",
                f"median {_fmt(m['median'])}",
                f"min {_fmt(m['min'])}; test median {_fmt(m.get('test_median'))}; "
                f"ratio {_fmt(m.get('ratio_to_test'), 3)}",
            )
        )
    rows += _family_rows(r)
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    lines = [f"{'metric':<{w0}}  {'value':<{w1}}  notes", "-" * (w0 + w1 + 40)]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    lin = r["lineage"]
    ex = lin["extractor"]
    lines.append("")
    lines.append(
        f"extractor: {ex['name']} sha256 {ex['sha256'][:12]}, features {ex['feature_dim']}-d"
    )
    lines.append(f"resize: {ex['resize']}")
    lines.append(
        f"reference: {lin['reference_split']} (n={lin['n_real_train']}), "
        f"n_fake={lin['n_fake']}, seed={lin['seed']}"
    )
    return "\n".join(lines)
