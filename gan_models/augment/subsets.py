"""The low-data regime: k real images per class, drawn once and shared by every arm.

Each class's train-split indices are shuffled by one seeded permutation and the first k taken,
so the subsets are nested (k = 10 inside k = 50 inside k = 200) and identical whatever arm or
seed reads them. They come from the train split only, which the preprocess stage made disjoint
from the test split; :func:`check_disjoint` checks it on the images themselves.

A subset is written as a processed dataset (``train/`` the subset, ``test/`` the real test
split, ``manifest.json`` naming its source and indices), so the generator trains, is evaluated
and registered on it like on any dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gan_models.data.format import read_imageset, read_meta, write_imageset
from gan_models.errors import DataError
from gan_models.utils.io import atomic_dir, sha256_file


def labelled_split(root: Path, split: str):
    """A processed split with labels, memory-mapped; a clear error when there are none."""
    path = root / split
    if not (path / "meta.json").is_file():
        raise DataError(
            f"{path}: no {split!r} split; the experiment needs a processed dataset with train and "
            f"test splits (run `ganops data preprocess {root.name}`)"
        )
    ds = read_imageset(path, mmap=True)
    if ds.kind != "images":
        raise DataError(f"{path}: expected an image dataset, got {ds.kind!r}")
    if ds.labels is None:
        raise DataError(
            f"{path} has no labels: the augmentation experiment needs a labelled dataset "
            "(class sub-folders for a folder source, or a labelled built-in source)"
        )
    return ds


def subset_indices(labels: np.ndarray, k: int, seed: int, where: str = "train split") -> np.ndarray:
    """Sorted indices of k images of each class: the first k of a seeded permutation per class."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    small = counts.min()
    if k > small:
        c = classes[counts.argmin()]
        raise DataError(
            f"k={k} is larger than class {int(c)} of the {where}, which has {int(small)} images; "
            f"choose k <= {int(small)}"
        )
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        picked.append(rows[rng.permutation(len(rows))[:k]])
    return np.sort(np.concatenate(picked))


def _digest(images: np.ndarray) -> np.ndarray:
    return np.array([hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest() for x in images])


def check_disjoint(train_images: np.ndarray, test_images: np.ndarray, where: str) -> None:
    """Refuse a subset that shares an image with the test split (byte-identical rows)."""
    shared = np.intersect1d(_digest(train_images), _digest(test_images))
    if len(shared):
        raise DataError(
            f"{where}: {len(shared)} image(s) of the subset are also in the test split; "
            "the test split must stay untouched (preprocess with distinct images)"
        )


def write_subset(source: Path, out: Path, k: int, seed: int) -> dict[str, Any]:
    """Write the k-per-class subset of ``source``'s train split (plus its test split) to ``out``.

    Returns the subset's manifest. An existing subset with the same source, k and seed is kept.
    """
    source = Path(source)
    src_meta = read_meta(source / "train")
    record = source / "manifest.json"
    src_sha = sha256_file(record) if record.is_file() else src_meta.get("sha256")
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if (
            old.get("source_manifest_sha256") == src_sha
            and old.get("k") == k
            and old.get("seed") == seed
        ):
            return old
    train = labelled_split(source, "train")
    test = labelled_split(source, "test")
    idx = subset_indices(train.labels, k, seed, f"train split of {source}")
    images = np.asarray(train.images[idx])
    check_disjoint(images, np.asarray(test.images), str(out))
    name = out.name
    manifest = {
        "name": name,
        "source": str(source),
        "source_manifest_sha256": src_sha,
        "k": k,
        "seed": seed,
        "indices": idx.tolist(),
        "count": int(len(idx)),
        "num_classes": src_meta.get("num_classes"),
        "class_names": src_meta.get("class_names"),
        "image_shape": list(images.shape[1:]),
    }
    meta = {k_: v for k_, v in src_meta.items() if k_ in ("num_classes", "class_names")}
    with atomic_dir(out) as tmp:
        write_imageset(
            tmp / "train",
            {"images": images},
            labels=np.asarray(train.labels)[idx],
            meta={
                **meta,
                "name": f"{name}/train",
                "origin": {"subset_of": str(source), "k": k, "seed": seed},
            },
        )
        shutil.copytree(source / "test", tmp / "test")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
