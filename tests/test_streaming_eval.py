"""Evaluation's reference statistics and the domain classifier's training, read from disk a batch
at a time: the numbers of the split held in memory, bit for bit, and clear errors for damaged
files."""

import numpy as np
import pytest
import torch

from gan_models.data import splits
from gan_models.data.format import write_imageset
from gan_models.data.splits import ScaledImages, load_split, open_split
from gan_models.data.stream import RowReader
from gan_models.errors import DataError
from gan_models.metrics.domain_classifier import (
    DomainClassifierExtractor,
    fit_classifier,
    train_domain_classifier,
)
from gan_models.metrics.images import array_sha256
from gan_models.metrics.reference import reference_stats

BUDGET_ROWS = 16  # the most images a read may return: far below the split's 300


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """A processed uint8 dataset of 4 classes of 16x16 colour bars: train 300, test 60."""
    root = tmp_path_factory.mktemp("processed") / "cbars"
    rng = np.random.default_rng(3)
    for split, n in (("train", 300), ("test", 60)):
        labels = np.arange(n) % 4
        x = rng.integers(0, 80, (n, 3, 16, 16)).astype(np.uint8)
        for i, y in enumerate(labels):
            x[i, y % 3, :, 4 * y : 4 * y + 3] = 235
        write_imageset(root / split, {"images": x}, labels=labels, meta={"name": "cbars"})
    return root


@pytest.fixture
def budget(monkeypatch):
    """Reads of at most BUDGET_ROWS images; records the largest one."""
    seen = {"max_rows": 0, "reads": 0, "by_file": {}}
    take, piece = RowReader.take, RowReader.slice

    def count(reader, rows):
        seen["max_rows"] = max(seen["max_rows"], rows)
        seen["by_file"][reader.path] = max(seen["by_file"].get(reader.path, 0), rows)
        seen["reads"] += 1

    def counted_take(self, idx):
        count(self, len(idx))
        return take(self, idx)

    def counted_slice(self, start, stop):
        count(self, min(stop, self.shape[0]) - start)
        return piece(self, start, stop)

    monkeypatch.setattr(RowReader, "take", counted_take)
    monkeypatch.setattr(RowReader, "slice", counted_slice)
    monkeypatch.setattr(splits, "_CHUNK_VALUES", BUDGET_ROWS * 3 * 16 * 16)
    return seen


def small_extractor(seed: int = 0) -> DomainClassifierExtractor:
    from gan_models.metrics.domain_classifier import DomainCNN, DomainCNNArch

    torch.manual_seed(seed)
    model = DomainCNN(DomainCNNArch(3, 4, (16, 16), width=4, hidden=16))
    return DomainClassifierExtractor(model, sha256="test", batch_size=BUDGET_ROWS)


def test_scaled_images_index_like_the_split_in_memory(processed):
    lazy, whole = open_split(processed, "train", 8).images, load_split(processed, "train", 8).images
    assert isinstance(lazy, ScaledImages) and lazy.shape == whole.shape == (300, 3, 8, 8)
    assert lazy.dtype == whole.dtype and len(lazy) == 300
    idx = np.array([299, 0, 17, 17, 5])
    for key in (slice(10, 40), slice(None, None, 7), slice(-5, None), idx, 3, -1, idx % 2 == 0):
        if isinstance(key, np.ndarray) and key.dtype == bool:
            key = np.arange(300) % 3 == 0
        np.testing.assert_array_equal(lazy[key], whole[key])
    np.testing.assert_array_equal(lazy.rows(100, 150)[np.array([0, 49])], whole[[100, 149]])
    np.testing.assert_array_equal(np.asarray(lazy), whole)
    assert array_sha256(lazy) == array_sha256(whole)
    with pytest.raises(IndexError):
        lazy[300]


@pytest.mark.parametrize("max_features", [10000, 100])
def test_reference_statistics_of_a_split_over_the_budget_equal_in_memory(
    processed, budget, tmp_path, max_features
):
    """The split is read at most BUDGET_ROWS images at a time, and the statistics, the stored
    feature subset, the logits and the cache key are those of the split held in memory."""
    ext = small_extractor()
    whole = load_split(processed, "train").images  # (300, 3, 16, 16) float32
    assert whole.nbytes > 10 * BUDGET_ROWS * whole[0].nbytes
    kw = {"split": "cbars/train", "max_features": max_features}
    memory = reference_stats(whole, ext, cache_dir=tmp_path / "memory", **kw)
    budget["max_rows"] = budget["reads"] = 0
    streamed = reference_stats(open_split(processed, "train").images, ext, cache_dir=tmp_path, **kw)
    assert 0 < budget["max_rows"] <= BUDGET_ROWS and budget["reads"] >= 2 * 300 // BUDGET_ROWS
    assert streamed.key == memory.key and not streamed.from_cache
    for name in ("mu", "sigma", "features", "indices", "logits"):
        a, b = getattr(memory, name), getattr(streamed, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name


def test_classifier_trained_from_the_split_on_disk_equals_in_memory(processed, budget, tmp_path):
    """Seeded epochs gather each batch's rows from the file (the test split is read in the
    accuracy's batches of 512): the same weights, card and accuracy as training on the split
    held in memory."""
    kw = {"epochs": 2, "batch_size": 12, "seed": 4, "width": 4, "hidden": 16}
    memory = train_domain_classifier(
        load_split(processed, "train"), load_split(processed, "test"), tmp_path / "m", **kw
    )
    budget["by_file"].clear()
    streamed = train_domain_classifier(
        open_split(processed, "train"), open_split(processed, "test"), tmp_path / "s", **kw
    )
    assert budget["by_file"][str(processed / "train/images.npy")] <= BUDGET_ROWS
    assert streamed["sha256"] == memory["sha256"]  # the weights file, byte for byte
    assert (tmp_path / "s/card.json").read_bytes() == (tmp_path / "m/card.json").read_bytes()
    a = fit_classifier(load_split(processed, "train").images, np.arange(300) % 4, num_classes=4,
                       max_steps=5, **kw)  # fmt: skip
    b = fit_classifier(open_split(processed, "train").images, np.arange(300) % 4, num_classes=4,
                       max_steps=5, **kw)  # fmt: skip
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_truncated_split_file_names_the_file(processed, tmp_path):
    import shutil

    root = tmp_path / "cbars"
    shutil.copytree(processed, root)
    images = root / "train" / "images.npy"
    data = images.read_bytes()
    images.write_bytes(data[: len(data) - 1000])
    with pytest.raises(DataError, match=str(images)):
        open_split(root, "train")
    # Cut while it is read: the reads name the file too.
    images.write_bytes(data)
    split = open_split(root, "train")
    images.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=str(images)):
        reference_stats(split.images, small_extractor(), split="cbars/train", cache_dir=tmp_path)


def test_bench_eval_data_refuses_tiny_sets(capsys):
    from gan_models.cli import main

    assert main(["bench", "eval-data", "--size", "10"]) == 2
    assert "--size: at least 64 images per set" in capsys.readouterr().err


def test_unpaired_train_split_streams_with_the_values_in_memory(processed, budget, tmp_path):
    """CycleGAN's evaluation reads its train domains for reference statistics a batch at a
    time: the values, and the statistics, equal the split held in memory."""
    from gan_models.data.splits import load_unpaired_split, open_unpaired_split

    root = tmp_path / "pair"
    train = load_split(processed, "train").images  # reuse the bars as two domains
    raw = np.asarray(splits.read_imageset(processed / "train").images)
    write_imageset(
        root / "train", {"a": raw[:150], "b": raw[150:]}, meta={"name": "pair"}, kind="unpaired"
    )
    lazy, whole = open_unpaired_split(root, "train", 8), load_unpaired_split(root, "train", 8)
    for k in ("a", "b"):
        assert isinstance(lazy[k], ScaledImages) and lazy[k].shape == whole[k].shape
        np.testing.assert_array_equal(np.asarray(lazy[k]), whole[k])
    ext = small_extractor()
    kw = {"split": "pair:b/train", "max_features": 10000}
    memory = reference_stats(
        load_unpaired_split(root, "train", None)["b"], ext, cache_dir=tmp_path / "memory", **kw
    )
    budget["max_rows"] = 0
    streamed = reference_stats(
        open_unpaired_split(root, "train", None)["b"], ext, cache_dir=tmp_path / "streamed", **kw
    )
    assert 0 < budget["max_rows"] <= BUDGET_ROWS
    assert streamed.mu.tobytes() == memory.mu.tobytes()
    assert streamed.sigma.tobytes() == memory.sigma.tobytes()
    assert train.shape[0] == 300
    with pytest.raises(DataError, match="expected an unpaired dataset"):
        open_unpaired_split(processed, "train", 8)
