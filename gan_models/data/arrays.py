"""Array files as a dataset: ``.npy`` (read memory-mapped, rows copied in chunks with plain reads)
or ``.npz`` (``images`` and optional ``labels`` members, read as they decompress), images as
uint8 (N, C, H, W) or (N, H, W, C), written a chunk at a time like an image folder's.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gan_models.data.loaded import ChunkedArray, Loaded
from gan_models.data.stream import RowReader, reader
from gan_models.errors import DataError
from gan_models.utils.io import sha256_file

# The most bytes of image rows copied at a time (a chunk of an image folder is bounded the same).
CHUNK_BYTES = 16 << 20


def _array_layout(path: Path, shape: tuple[int, ...]) -> str:
    """How an array file's images are laid out: ``nchw``, ``nhwc`` or ``nhw``."""
    if len(shape) == 3:
        return "nhw"
    if len(shape) == 4 and shape[1] not in (1, 3) and shape[-1] in (1, 3):
        return "nhwc"
    if len(shape) == 4 and shape[1] in (1, 3):
        return "nchw"
    raise DataError(f"{path}: images of shape {shape} are not (N, C, H, W)")


def _as_nchw(rows: np.ndarray, layout: str) -> np.ndarray:
    if layout == "nhw":
        return rows[:, None]
    if layout == "nhwc":
        return np.ascontiguousarray(rows.transpose(0, 3, 1, 2))
    return rows


def _read_npy_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from an open ``.npy`` stream, leaving it at the data."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f".npy format version {version} is not supported")


_ARRAY_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def load_array_file(path: Path) -> Loaded:
    """Images from an array file: ``.npy`` (N, C, H, W), (N, H, W, C) with C in 1/3, or (N, H, W),
    uint8; or ``.npz`` with ``images`` in one of those shapes and optional int ``labels`` (N,).

    Nothing is read whole: a ``.npy`` is memory-mapped (header and length checked now) and its
    rows copied a chunk at a time with plain reads when the dataset is written. A ``.npz``
    member cannot be memory-mapped; ``images.npy`` is read from the archive in chunks as it
    decompresses (``labels`` is loaded). A Fortran-ordered ``.npz`` member is the exception: it
    is loaded whole.
    """
    try:
        if path.suffix == ".npz":
            return _load_npz(path)
        x = np.load(path, mmap_mode="r", allow_pickle=False)  # (N, ...) memory-mapped
    except _ARRAY_ERRORS as e:
        raise DataError(f"{path}: damaged, truncated or unreadable array file ({e})") from None
    if x.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 0..255, got {x.dtype}")
    layout = _array_layout(path, x.shape)
    src = reader(x)  # plain reads of a C-ordered file: mapped pages would count in RSS
    step = max(1, CHUNK_BYTES // max(1, int(np.prod(x.shape[1:]))))

    def chunks() -> Iterator[np.ndarray]:
        try:
            for start in range(0, len(x), step):
                stop = min(start + step, len(x))
                rows = src.slice(start, stop) if isinstance(src, RowReader) else x[start:stop]
                yield _as_nchw(np.asarray(rows), layout)
                del rows  # before the next chunk is read
        except _ARRAY_ERRORS as e:
            raise DataError(f"{path}: damaged or truncated array file ({e})") from None
        finally:
            if isinstance(src, RowReader):
                src.close()

    shape = _as_nchw(np.empty((0, *x.shape[1:]), np.uint8), layout).shape[1:]
    origin = {"path": str(path), "array_file_sha256": sha256_file(path), "channels": shape[0]}
    return Loaded(arrays={"images": ChunkedArray((len(x), *shape), chunks)}, origin=origin)


def _load_npz(path: Path) -> Loaded:
    with np.load(path, allow_pickle=False) as z:  # reads the member list, not the members
        names = list(z.files)
        if "images" not in names:
            raise DataError(f"{path}: no 'images' array (found {sorted(names)})")
        labels = z["labels"] if "labels" in names else None
    with zipfile.ZipFile(path) as zf:
        member = "images.npy" if "images.npy" in zf.namelist() else "images"
        with zf.open(member) as f:
            full, fortran, dtype = _read_npy_header(f)
    if dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 0..255, got {dtype}")
    layout = _array_layout(path, full)
    n = full[0]
    if labels is not None and (labels.ndim != 1 or len(labels) != n):
        raise DataError(f"{path}: labels of shape {labels.shape} do not match {n} images")
    row_bytes = int(np.prod(full[1:], dtype=np.int64))
    step = max(1, CHUNK_BYTES // max(1, row_bytes))

    def chunks() -> Iterator[np.ndarray]:
        try:
            if fortran:  # rows are not contiguous in the file
                with np.load(path, allow_pickle=False) as z:
                    whole = z["images"]
                for start in range(0, n, step):
                    yield _as_nchw(np.ascontiguousarray(whole[start : start + step]), layout)
                return
            with zipfile.ZipFile(path) as zf, zf.open(member) as f:
                _read_npy_header(f)
                for start in range(0, n, step):
                    rows = min(step, n - start)
                    data = f.read(rows * row_bytes)
                    if len(data) != rows * row_bytes:
                        got = start + len(data) // row_bytes
                        raise DataError(
                            f"{path}: {member} is truncated (it ends at image {got} of {n}); "
                            "write the archive again"
                        )
                    x = np.frombuffer(data, np.uint8).reshape(rows, *full[1:])
                    yield _as_nchw(x, layout)
                    del data, x  # before the next chunk is read
        except _ARRAY_ERRORS as e:
            raise DataError(f"{path}: damaged or truncated array file ({e})") from None

    shape = _as_nchw(np.empty((0, *full[1:]), np.uint8), layout).shape[1:]
    origin = {"path": str(path), "array_file_sha256": sha256_file(path), "channels": shape[0]}
    return Loaded(
        arrays={"images": ChunkedArray((n, *shape), chunks)},
        labels=None if labels is None else labels.astype(np.int64),
        origin=origin,
    )
