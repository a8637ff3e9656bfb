"""The IDX format of MNIST and Fashion-MNIST, parsed with numpy only.

The four original files (train then t10k, images and labels) become one set whose
``origin["official_test_range"]`` records the half-open index range ``[start, stop)`` that held
the official test split.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gan_models.data.loaded import Loaded
from gan_models.errors import DataError

if TYPE_CHECKING:
    from gan_models.data.download import RemoteFile

# IDX type codes (third magic byte); multi-byte values are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, where: str = "<bytes>") -> np.ndarray:
    """Parse an IDX file (gzipped or not) into an array in native byte order.

    Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
    dimension, then the values in C order.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{where}: corrupt gzip stream ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{where}: not an IDX file (the magic number must start with two zero bytes)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DataError(
            f"{where}: unknown IDX type code 0x{code:02x}; expected one of "
            + ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: truncated IDX header ({len(data)} bytes, {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    count = math.prod(dims)
    if len(data) - header != count * dtype.itemsize:
        raise DataError(
            f"{where}: IDX dimensions {dims} need {count * dtype.itemsize} bytes of data, "
            f"the file holds {len(data) - header} (truncated or not an IDX file)"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _read_idx_pair(images: Path, labels: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x = parse_idx(images.read_bytes(), str(images))
    y = parse_idx(labels.read_bytes(), str(labels))
    if x.dtype != np.uint8 or x.ndim != 3:
        raise DataError(
            f"{images}: expected uint8 images of shape (N, H, W), got {x.dtype} {x.shape}"
        )
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{labels}: expected integer labels of shape (N,), got {y.dtype} {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{split} split: {images.name} holds {x.shape[0]} images but {labels.name} "
            f"holds {y.shape[0]} labels"
        )
    return x, y.astype(np.int64)


def read_idx_dataset(files: dict[str, Path]) -> Loaded:
    """Combine the four IDX files (train then t10k) into (N, 1, H, W) uint8 and labels."""
    x_tr, y_tr = _read_idx_pair(
        files["train-images-idx3-ubyte.gz"], files["train-labels-idx1-ubyte.gz"], "train"
    )
    x_te, y_te = _read_idx_pair(
        files["t10k-images-idx3-ubyte.gz"], files["t10k-labels-idx1-ubyte.gz"], "test"
    )
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(
            f"train images are {x_tr.shape[1:]} but test images are {x_te.shape[1:]}; "
            "both splits must share one image size"
        )
    images = np.concatenate([x_tr, x_te])[:, None]  # (N, 1, H, W)
    labels = np.concatenate([y_tr, y_te])
    n_tr = x_tr.shape[0]
    return Loaded(
        arrays={"images": images},
        labels=labels,
        origin={
            "official_train_range": [0, n_tr],
            "official_test_range": [n_tr, n_tr + x_te.shape[0]],
        },
    )


def find_idx_files(root: Path, files: tuple[RemoteFile, ...]) -> dict[str, Path]:
    """Locate each original ``*.gz`` file under ``root``, or its uncompressed twin."""
    found = {}
    for f in files:
        stem = f.name.removesuffix(".gz")
        # "train-images.idx3-ubyte" is how several unpacked copies name the files.
        names = [f.name, stem, stem.replace("-idx", ".idx")]
        hit = next((root / n for n in names if (root / n).is_file()), None)
        if hit is None:
            raise DataError(
                f"{root}: missing {f.name} (or uncompressed {stem}); --path must hold the "
                f"original files: {', '.join(g.name for g in files)}"
            )
        found[f.name] = hit
    return found
