"""The preprocessing stage: a raw dataset into uint8 train/val/test splits at the model's size.

``data/raw/NAME/`` (uint8 (N, C, H, W)) becomes ``data/processed/NAME/{train,val,test}/``, each a
dataset directory in the format of :mod:`gan_models.data.format` holding uint8 images at
``image_size`` (resized and channel-converted in float32 in [-1, 1], then rounded back to
0..255: a quarter of float32's size; the trainer scales batches to [-1, 1] on the device), plus
``manifest.json`` (counts, shapes, sha256 of every file, the params used and the raw dataset's
checksums). Images are read, transformed and written ``chunk_size`` at a time by a few threads,
in order, so memory stays flat at any size. The output directory is written whole or not at
all, and the same inputs give byte-identical outputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from gan_models.config import Section
from gan_models.data.format import FORMAT_VERSION, finish_imageset, read_imageset
from gan_models.data.stream import NpyWriter, reader, take
from gan_models.errors import DataError
from gan_models.utils.io import atomic_dir, sha256_file

SPLITS = ("train", "val", "test")
# How the work is done, not what comes out: left out of the manifest, so they change no bytes.
RUNTIME_KEYS = {"workers", "progress"}
# ITU-R BT.601 luma, the weights PIL's convert("L") uses.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class SplitFractions(Section):
    """Fractions of the images in each split; they must sum to 1."""

    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class PreprocessParams(Section):
    """Settings of the preprocessing stage (``preprocess:`` in params/data.yaml)."""

    image_size: int = Field(32, ge=4, description="square side of the output images")
    resize: Literal["resize", "pad"] = Field(
        "resize", description="resize: interpolate to the size; pad: centre on a pad_value canvas"
    )
    interpolation: Literal["bilinear", "bicubic", "area", "nearest", "nearest-exact"] = Field(
        "bilinear", description="torch F.interpolate mode used by resize"
    )
    antialias: bool = Field(
        True, description="low-pass when downscaling (bilinear/bicubic; area always averages)"
    )
    pad_value: float = Field(-1.0, ge=-1, le=1, description="fill of pad mode, in [-1, 1]")
    channels: Literal["keep", 1, 3] = Field(
        "keep", description="keep, 1 (luma of RGB) or 3 (grey repeated)"
    )
    split: SplitFractions = SplitFractions()
    stratify: bool = Field(True, description="stratify the split by label when labels exist")
    seed: int = Field(0, description="seed of the split shuffle")
    chunk_size: int = Field(1024, ge=1, description="images transformed at once (memory bound)")
    workers: int = Field(
        0, ge=0, description="threads transforming chunks; 0 = one per CPU core, at most 8"
    )
    progress: bool = Field(True, description="progress bar on stderr (only on a terminal)")


def split_indices(
    n: int, labels: np.ndarray | None, params: PreprocessParams
) -> dict[str, np.ndarray]:
    """Deterministic train/val/test indices (sorted) for ``n`` images, stratified by label.

    Split sizes are ``round(fraction * n)`` for val and test, the rest for train.
    """
    from sklearn.model_selection import train_test_split

    n_test = round(params.split.test * n)
    n_val = round(params.split.val * n)
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 1:
        raise DataError(
            f"preprocess.split {params.split.model_dump()} of {n} images leaves a split empty "
            f"(train {n_train}, val {n_val}, test {n_test}); use more images or other fractions"
        )
    idx = np.arange(n)
    strat = labels if (params.stratify and labels is not None) else None
    try:
        rest, test = train_test_split(
            idx, test_size=n_test, stratify=strat, random_state=params.seed
        )
        train, val = train_test_split(
            rest,
            test_size=n_val,
            stratify=None if strat is None else strat[rest],
            random_state=params.seed,
        )
    except ValueError as e:
        # sklearn refuses a stratified split when a class is too small for every split.
        raise DataError(
            f"cannot split {n} images stratified by label with preprocess.split "
            f"{params.split.model_dump()}: {e}; set preprocess.stratify=false or use more images"
        ) from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def _to_unit_range(x: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """uint8 0..255 or float32 already in [-1, 1] -> float32 tensor in [-1, 1]."""
    if x.dtype == np.uint8:
        return torch.from_numpy(x.astype(np.float32)) / 127.5 - 1.0  # (B, C, H, W)
    if x.dtype == np.float32:
        t = torch.from_numpy(np.ascontiguousarray(x))  # (B, C, H, W)
        bad = ~torch.isfinite(t).flatten(1).all(dim=1)
        if bad.any():
            where = rows[bad.numpy()].tolist()[:10]
            raise DataError(
                f"raw images {where} hold NaN or inf values; run `ganops data validate` first"
            )
        return t
    raise DataError(f"raw images must be uint8 or float32, got {x.dtype}")


def _convert_channels(x: torch.Tensor, channels: Literal["keep", 1, 3]) -> torch.Tensor:
    c = x.shape[1]
    if channels == "keep" or channels == c:
        return x
    if channels == 1 and c == 3:
        w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    if channels == 3 and c == 1:
        return x.expand(-1, 3, -1, -1).contiguous()  # (B, 3, H, W)
    raise DataError(f"preprocess.channels={channels}: cannot convert {c}-channel images")


def _to_size(x: torch.Tensor, p: PreprocessParams) -> torch.Tensor:
    s = p.image_size
    h, w = x.shape[-2:]
    if (h, w) == (s, s):
        return x
    if p.resize == "pad":
        if h > s or w > s:
            raise DataError(
                f"preprocess.resize=pad: images are {h}x{w}, larger than image_size {s}; "
                "use resize=resize or a larger image_size"
            )
        top, left = (s - h) // 2, (s - w) // 2
        return F.pad(x, (left, s - w - left, top, s - h - top), value=p.pad_value)  # (B, C, s, s)
    mode = p.interpolation
    smooth = mode in ("bilinear", "bicubic")
    out = F.interpolate(
        x,
        size=(s, s),
        mode=mode,
        align_corners=False if smooth else None,
        antialias=p.antialias and smooth and (h > s or w > s),
    )  # (B, C, s, s)
    # bicubic overshoots at edges; the format promises [-1, 1].
    return out.clamp_(-1.0, 1.0)


def transform_images(
    images: np.ndarray, params: PreprocessParams, rows: np.ndarray | None = None
) -> np.ndarray:
    """(N, C, H, W) uint8 or float32 -> float32 (N, C', S, S) in [-1, 1], ``chunk_size`` at a time.

    ``rows`` are the images' indices in the raw dataset, for error messages (default 0..N-1).
    """
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), params.chunk_size):
            stop = start + params.chunk_size
            x = _to_unit_range(images[start:stop], rows[start:stop])
            x = _convert_channels(x, params.channels)
            x = _to_size(x, params)
            out.append(x.numpy().astype(np.float32, copy=False))
    return np.concatenate(out)


def quantize(x: torch.Tensor) -> np.ndarray:
    """float32 in [-1, 1] -> uint8 0..255, rounded to nearest (uint8 v -> v exactly)."""
    return ((x + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).numpy()


def _stored(images: np.ndarray, rows: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Raw images (B, C, H, W) -> uint8 (B, C', S, S), as the processed files hold them."""
    with torch.no_grad():
        x = _to_unit_range(images, rows)
        return quantize(_to_size(_convert_channels(x, params.channels), params))


def preprocess_images(images: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Raw images (N, C, H, W) uint8 or float32 -> uint8 (N, C', S, S), byte for byte what
    preprocess writes for them (``chunk_size`` at a time): for images that live outside the
    dataset, such as the true counterparts of a pair (:mod:`gan_models.data.pairing`)."""
    rows = np.arange(len(images))
    step = params.chunk_size
    return np.concatenate(
        [
            _stored(images[i : i + step], rows[i : i + step], params)
            for i in range(0, len(rows), step)
        ]
    )


def _out_shape(shape: tuple[int, ...], n: int, p: PreprocessParams) -> tuple[int, int, int, int]:
    c = shape[1] if p.channels == "keep" else int(p.channels)
    return (n, c, p.image_size, p.image_size)


def write_transformed(
    src, rows: np.ndarray, path: Path, params: PreprocessParams, desc: str = ""
) -> tuple[int, ...]:
    """Rows ``rows`` of ``src`` (an array or a row reader) transformed into a uint8 ``.npy`` at
    ``path``, ``chunk_size`` images at a time on a few threads, written in order."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    shape = _out_shape(src.shape, len(rows), params)
    writer = NpyWriter(path, shape, np.uint8)
    chunks = [rows[i : i + params.chunk_size] for i in range(0, len(rows), params.chunk_size)]
    workers = params.workers or min(8, os.cpu_count() or 1)

    def one(idx: np.ndarray) -> np.ndarray:
        return _stored(take(src, idx), idx, params)

    bar = tqdm(
        total=len(rows), desc=desc, unit="img", disable=not params.progress or None,
        mininterval=1.0, file=sys.stderr,
    )  # fmt: skip
    try:
        with ThreadPoolExecutor(workers) as pool:
            pending = []
            for idx in chunks:  # a window of 2 chunks per thread bounds memory
                pending.append(pool.submit(one, idx))
                if len(pending) >= 2 * workers:
                    out = pending.pop(0).result()
                    writer.write(out)
                    bar.update(len(out))
            for f in pending:
                out = f.result()
                writer.write(out)
                bar.update(len(out))
    finally:
        bar.close()
        writer._f.close()
    writer.close()
    return shape


def _per_class(labels: np.ndarray | None) -> dict[str, int] | None:
    if labels is None:
        return None
    values, counts = np.unique(labels, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)}


def preprocess_dataset(
    raw_dir: str | Path, out_dir: str | Path, params: PreprocessParams
) -> dict[str, Any]:
    """Write ``out_dir/{train,val,test}/`` and ``out_dir/manifest.json``; return the manifest.

    The dataset's name is the raw directory's name. ``out_dir`` is replaced whole on success and
    left as it was on failure.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    name = raw_dir.name
    raw = read_imageset(raw_dir, verify=True, mmap=True)
    if raw.kind == "unpaired":
        return _preprocess_unpaired(raw, raw_dir, out_dir, params)
    if raw.kind != "images":
        raise DataError(
            f"{raw_dir}: preprocess handles kind 'images' and 'unpaired' datasets; this one is "
            f"{raw.kind!r}"
        )
    images, labels = reader(raw.images), raw.labels
    num_classes = raw.num_classes
    if labels is not None and num_classes is None:
        num_classes = int(labels.max()) + 1
    parts = split_indices(raw.images.shape[0], labels, params)
    file_names = raw.meta.get("file_names")
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "stage": "preprocess",
        "name": name,
        "raw": {
            "name": name,
            "meta_json_sha256": sha256_file(raw_dir / "meta.json"),
            "sha256": raw.meta.get("sha256", {}),
            "shape": list(raw.images.shape),
            "dtype": str(raw.images.dtype),
        },
        "params": params.model_dump(mode="json", exclude=RUNTIME_KEYS),
        "num_classes": num_classes,
        "class_names": raw.meta.get("class_names"),
        "value_range": [0, 255],
        "splits": {},
    }
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            idx = parts[split]
            (tmp / split).mkdir()
            shape = write_transformed(
                images, idx, tmp / split / "images.npy", params, f"{name}/{split}"
            )  # (n, C', S, S) uint8
            y = None if labels is None else labels[idx]
            meta: dict[str, Any] = {
                "name": f"{name}/{split}",
                "source": raw.meta.get("source"),
                "origin": {"stage": "preprocess", "raw": name, "split": split},
            }
            if num_classes is not None:
                meta["num_classes"] = num_classes
            if raw.meta.get("class_names") is not None:
                meta["class_names"] = raw.meta["class_names"]
            if isinstance(file_names, list) and len(file_names) == raw.images.shape[0]:
                meta["file_names"] = [file_names[i] for i in idx]
            meta.update(format_version=FORMAT_VERSION, kind="images", arrays={"images": shape})
            finish_imageset(tmp / split, meta, labels=y)
            files = sorted(p.name for p in (tmp / split).iterdir())
            manifest["splits"][split] = {
                "count": len(idx),
                "per_class": _per_class(y),
                "shape": list(shape),
                "dtype": "uint8",
                "sha256": {f: sha256_file(tmp / split / f) for f in files},
            }
        manifest["image_shape"] = manifest["splits"]["train"]["shape"][1:]
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _pairing_meta(raw: Any, rows: dict[str, np.ndarray]) -> dict[str, Any]:
    """What a split of an unpaired set keeps of its images' identities: the raw meta's
    ``codepoints`` of the split's rows, per domain in row order, and its ``pairing`` (how to
    find each image's true counterpart, :mod:`gan_models.data.pairing`). Nothing for a set
    without codepoints (one per image of each domain), whose splits stay as they were."""
    cps = raw.meta.get("codepoints")
    if not isinstance(cps, dict) or not all(
        isinstance(cps.get(k), list) and len(cps[k]) == len(raw.arrays[k]) for k in rows
    ):
        return {}
    out: dict[str, Any] = {"codepoints": {k: [cps[k][i] for i in r] for k, r in rows.items()}}
    if isinstance(raw.meta.get("pairing"), dict):
        out["pairing"] = raw.meta["pairing"]
    return out


def _preprocess_unpaired(
    raw: Any, raw_dir: Path, out_dir: Path, params: PreprocessParams
) -> dict[str, Any]:
    """Unpaired domains: ``a`` and ``b`` are split independently (their counts may differ), each
    split an unpaired dataset directory holding both domains' images of that split."""
    name = raw_dir.name
    parts = {k: split_indices(len(raw.arrays[k]), None, params) for k in ("a", "b")}
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "stage": "preprocess",
        "name": name,
        "kind": "unpaired",
        "raw": {
            "name": name,
            "meta_json_sha256": sha256_file(raw_dir / "meta.json"),
            "sha256": raw.meta.get("sha256", {}),
            "shape": {k: list(v.shape) for k, v in raw.arrays.items()},
            "dtype": {k: str(v.dtype) for k, v in raw.arrays.items()},
        },
        "params": params.model_dump(mode="json", exclude=RUNTIME_KEYS),
        "value_range": [0, 255],
        "splits": {},
    }
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            (tmp / split).mkdir()
            shapes = {
                k: write_transformed(
                    reader(raw.arrays[k]),
                    parts[k][split],
                    tmp / split / f"{k}.npy",
                    params,
                    f"{name}/{split}/{k}",
                )
                for k in ("a", "b")
            }  # (n_k, C', S, S) uint8 each
            meta = {
                "name": f"{name}/{split}",
                "source": raw.meta.get("source"),
                "origin": {"stage": "preprocess", "raw": name, "split": split},
                **_pairing_meta(raw, {k: parts[k][split] for k in ("a", "b")}),
            }
            meta.update(format_version=FORMAT_VERSION, kind="unpaired", arrays=shapes)
            finish_imageset(tmp / split, meta)
            files = sorted(p.name for p in (tmp / split).iterdir())
            manifest["splits"][split] = {
                "count": {k: len(parts[k][split]) for k in shapes},
                "shape": {k: list(v) for k, v in shapes.items()},
                "dtype": "uint8",
                "sha256": {f: sha256_file(tmp / split / f) for f in files},
            }
        manifest["image_shape"] = manifest["splits"]["train"]["shape"]["b"][1:]
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
