"""Fetch and preprocess write chunk by chunk: the bytes of an in-memory reference, any chunking;
a file that breaks mid-way is named and leaves nothing behind; array files are read in chunks."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_models.data import arrays as arrays_mod
from gan_models.data import fetch, read_imageset
from gan_models.data import folders as folders_mod
from gan_models.data.folders import load_folder
from gan_models.data.loaded import ChunkedArray
from gan_models.data.preprocess import (
    PreprocessParams,
    preprocess_dataset,
    quantize,
    split_indices,
    transform_images,
)
from gan_models.errors import DataError


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def nothing_left(out_root: Path) -> bool:
    """No dataset directory and no temporary directory remain."""
    return not out_root.exists() or list(out_root.iterdir()) == []


@pytest.fixture()
def classes(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """23 PNGs in 2 class folders (one grey, the rest colour), their RGB (N, 3, H, W) and labels,
    in the sorted order fetch reads them."""
    rng = np.random.default_rng(3)
    root = tmp_path / "in"
    images, labels = [], []
    for k, cls in enumerate(("cats", "dogs")):
        (root / cls).mkdir(parents=True)
        for i in range(11 + k):
            grey = k == 0 and i == 4
            arr = rng.integers(0, 256, (9, 10) if grey else (9, 10, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i:02d}.png")
            rgb = np.repeat(arr[..., None], 3, axis=-1) if grey else arr
            images.append(rgb.transpose(2, 0, 1))
            labels.append(k)
    return root, np.stack(images), np.asarray(labels, dtype=np.int64)


@pytest.mark.parametrize("chunk_images", [1, 4, 1024])
def test_fetch_folder_writes_the_bytes_of_the_whole_array(
    tmp_path, classes, monkeypatch, chunk_images
):
    """Decoded a few images at a time, the files are those np.save writes for the whole array,
    and meta.json's digests and lineage are complete."""
    root, images, labels = classes
    monkeypatch.setattr(folders_mod, "CHUNK_BYTES", chunk_images * images[0].nbytes)
    meta = fetch("folder", "f", path=root, out_root=tmp_path / "raw")
    out = tmp_path / "raw/f"
    assert (out / "images.npy").read_bytes() == npy_bytes(images)
    assert (out / "labels.npy").read_bytes() == npy_bytes(labels)
    assert meta["arrays"] == {"images": [23, 3, 9, 10]}
    assert meta["origin"]["num_files"] == 23 and len(meta["origin"]["files_sha256"]) == 64
    read_imageset(out, verify=True)  # sha256 of every file matches meta.json


def test_fetch_is_byte_identical_for_any_chunking(tmp_path, classes, monkeypatch):
    root, images, _ = classes
    fetch("folder", "a", path=root, out_root=tmp_path / "raw")
    monkeypatch.setattr(folders_mod, "CHUNK_BYTES", 3 * images[0].nbytes)
    fetch("folder", "b", path=root, out_root=tmp_path / "raw")
    for name in ("images.npy", "labels.npy"):
        assert (tmp_path / "raw/a" / name).read_bytes() == (tmp_path / "raw/b" / name).read_bytes()
    meta_a = (tmp_path / "raw/a/meta.json").read_text().replace('"a"', '"b"')
    assert meta_a == (tmp_path / "raw/b/meta.json").read_text()


def test_unpaired_origin_carries_each_sides_digest(tmp_path):
    rng = np.random.default_rng(0)
    for side, n in (("a", 3), ("b", 5)):
        (tmp_path / "in" / side).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (6, 6), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "in" / side / f"{i}.png")
    meta = fetch("unpaired", "u", path=tmp_path / "in", out_root=tmp_path / "raw")
    for side, n in (("a", 3), ("b", 5)):
        assert meta["origin"][side]["num_files"] == n
        assert meta["origin"][side]["dir"] == side
        assert len(meta["origin"][side]["files_sha256"]) == 64


def test_truncated_image_in_a_later_chunk_is_named_and_leaves_nothing(
    tmp_path, classes, monkeypatch
):
    """The first chunks are already written when a truncated file fails: the temporary folder
    goes, and an earlier dataset under the name stays as it was."""
    root, images, _ = classes
    fetch("folder", "f", path=root, out_root=tmp_path / "raw")
    before = (tmp_path / "raw/f/images.npy").read_bytes()
    bad = root / "dogs" / "09.png"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 10, 3), np.uint8)).save(
        buf, format="PNG"
    )
    bad.write_bytes(buf.getvalue()[:150])
    monkeypatch.setattr(folders_mod, "CHUNK_BYTES", 4 * images[0].nbytes)
    with pytest.raises(DataError, match=r"dogs/09\.png: corrupt or truncated image"):
        fetch("folder", "f", path=root, out_root=tmp_path / "raw")
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["f"]
    assert (tmp_path / "raw/f/images.npy").read_bytes() == before
    with pytest.raises(DataError, match=r"dogs/09\.png"):
        fetch("folder", "g", path=root, out_root=tmp_path / "new")
    assert nothing_left(tmp_path / "new")


def test_npy_is_read_in_chunks_with_the_same_bytes(tmp_path, monkeypatch):
    """An array file larger than a chunk (here 3 images) is read a chunk at a time from its
    memory-mapped file, never whole; channels-last and grey arrays give (N, C, H, W)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)  # (N, H, W, C)
    np.save(tmp_path / "last.npy", x)
    np.save(tmp_path / "grey.npy", x[..., 0])
    monkeypatch.setattr(arrays_mod, "CHUNK_BYTES", 3 * x[0].nbytes)
    loaded = load_folder(tmp_path / "last.npy")
    arr = loaded.arrays["images"]
    assert isinstance(arr, ChunkedArray) and arr.shape == (20, 3, 8, 8)
    sizes = [len(c) for c in arr.chunks()]
    assert sizes == [3] * 6 + [2]
    fetch("folder", "last", path=tmp_path / "last.npy", out_root=tmp_path / "raw")
    got = (tmp_path / "raw/last/images.npy").read_bytes()
    assert got == npy_bytes(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    fetch("folder", "grey", path=tmp_path / "grey.npy", out_root=tmp_path / "raw")
    got = (tmp_path / "raw/grey/images.npy").read_bytes()
    assert got == npy_bytes(x[:, None, :, :, 0])


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_members_stream_with_the_same_bytes(tmp_path, monkeypatch, compressed):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "set.npz", images=x, labels=np.arange(20) % 4)
    monkeypatch.setattr(arrays_mod, "CHUNK_BYTES", 3 * x[0].nbytes)
    meta = fetch("folder", "z", path=tmp_path / "set.npz", out_root=tmp_path / "raw")
    assert (tmp_path / "raw/z/images.npy").read_bytes() == npy_bytes(x)
    assert meta["num_classes"] == 4
    assert (tmp_path / "raw/z/labels.npy").read_bytes() == npy_bytes(np.arange(20) % 4)


def test_truncated_npy_is_named_and_leaves_nothing(tmp_path):
    x = np.zeros((50, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "cut.npy", x)
    with open(tmp_path / "cut.npy", "r+b") as f:
        f.truncate(128 + 40 * x[0].nbytes)  # the header and 40 of 50 images
    with pytest.raises(DataError, match=r"cut\.npy: damaged, truncated"):
        fetch("folder", "c", path=tmp_path / "cut.npy", out_root=tmp_path / "raw")
    assert nothing_left(tmp_path / "raw")


def test_npz_damaged_mid_member_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    """The archive opens (its directory is intact) but the images member's data is damaged
    past the first chunk: the error comes while writing, and nothing is left."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    np.savez_compressed(tmp_path / "bad.npz", images=x)
    data = bytearray((tmp_path / "bad.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "bad.npz") as zf:
        info = zf.getinfo("images.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    mid = start + info.compress_size // 2
    data[mid : mid + 64] = bytes(64)
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    monkeypatch.setattr(arrays_mod, "CHUNK_BYTES", 4 * x[0].nbytes)
    with pytest.raises(DataError, match=r"bad\.npz: damaged or truncated"):
        fetch("folder", "b", path=tmp_path / "bad.npz", out_root=tmp_path / "raw")
    assert nothing_left(tmp_path / "raw")


def test_preprocess_of_a_fetched_folder_matches_an_in_memory_reference(tmp_path, classes):
    """Read by rows and written by chunks, each split holds the bytes of the whole split
    transformed in memory and saved at once."""
    root, images, labels = classes
    fetch("folder", "f", path=root, out_root=tmp_path / "raw")
    params = PreprocessParams(image_size=6, chunk_size=2, progress=False, stratify=False)
    preprocess_dataset(tmp_path / "raw/f", tmp_path / "processed/f", params)
    parts = split_indices(len(images), labels, params)
    for split in ("train", "val", "test"):
        idx = parts[split]
        want = quantize(torch.from_numpy(transform_images(images[idx], params)))
        got = (tmp_path / "processed/f" / split / "images.npy").read_bytes()
        assert got == npy_bytes(want)
        assert (tmp_path / "processed/f" / split / "labels.npy").read_bytes() == npy_bytes(
            labels[idx]
        )


def test_preprocess_of_a_truncated_raw_file_is_named_and_leaves_nothing(tmp_path, classes):
    root, _, _ = classes
    fetch("folder", "f", path=root, out_root=tmp_path / "raw")
    file = tmp_path / "raw/f/images.npy"
    with open(file, "r+b") as f:
        f.truncate(file.stat().st_size - 500)
    with pytest.raises(DataError, match=r"raw/f/images\.npy"):
        preprocess_dataset(tmp_path / "raw/f", tmp_path / "processed/f", PreprocessParams())
    assert nothing_left(tmp_path / "processed")
