"""Processed splits as the networks see them: float32 in [-1, 1], resized like the trainer does.

Stored images are uint8 0..255 (or float32 -1..1 for sets written before format 2).
:func:`scale_to_model` maps a batch to the models' range and size on any device; the trainer's
batches, evaluation, FID during training and the families' seeded inputs all go through it, so
every consumer sees the same pixels.

:func:`open_split` gives a split without loading it: its images are a :class:`ScaledImages`, a
read-only array-like over the stored file that reads only the rows asked for and scales them
when indexed, so reference statistics and the domain classifier's training hold a batch at a
time, whatever the split's size. :func:`load_split` holds the whole split in float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gan_models.data.format import ImageSet, read_imageset
from gan_models.data.stream import RowReader, reader
from gan_models.errors import DataError

if TYPE_CHECKING:
    from gan_models.training.params import TrainParams


def scale_to_model(x: Tensor, size: int | None) -> Tensor:
    """uint8 0..255 or float32 -1..1 (N, C, H, W) on any device -> float32 -1..1, at ``size``."""
    x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()  # (N, C, H, W)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        x = x.clamp_(-1.0, 1.0)
    return x


def to_model_range(arr: np.ndarray, size: int | None) -> Tensor:
    """uint8 0..255 or float32 -1..1 (N, C, H, W) -> float32 -1..1 tensor, resized to ``size``."""
    return scale_to_model(torch.from_numpy(np.ascontiguousarray(arr)), size)


def dataset_name(params: TrainParams) -> str:
    """The dataset a run trained on: the name of its data directory (``data/processed/NAME``)."""
    return Path(params.data.path).name


# Rows scaled at once by ScaledImages.chunks: 2**24 float32 values (64 MiB) at most.
_CHUNK_VALUES = 1 << 24


class ScaledImages:
    """Stored images (N, C, H, W) seen as float32 in [-1, 1] at ``size``, read when indexed.

    Indexing (an int, a slice, an index array or a boolean mask) reads those rows, from the
    file with positional reads when ``arr`` is memory-mapped (nothing is mapped, so a pass over
    the split holds only its current rows), and returns them as :func:`to_model_range` makes
    them: the values of the whole split converted at once, bit for bit. ``rows(start, stop)`` is
    a lazy view of a row range; ``chunks()`` walks the split in bounded pieces.
    """

    def __init__(self, arr: np.ndarray, size: int | None = None):
        if arr.ndim != 4:
            raise DataError(f"images must have shape (N, C, H, W), got {arr.shape}")
        self._src: np.ndarray | RowReader = reader(arr)
        self._arr = arr
        self.size = size
        n, c, h, w = (int(d) for d in arr.shape)
        side = (size, size) if size is not None else (h, w)
        self._start, self._stop = 0, n
        self._row_shape = (c, *side)
        self.filename = getattr(arr, "filename", None)

    # ------------------------------------------------------------------ array-like
    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self._stop - self._start, *self._row_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 4

    @property
    def nbytes(self) -> int:
        """Bytes of the scaled float32 images (what :func:`load_split` would hold)."""
        return int(np.prod(self.shape)) * 4

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, key: Any) -> np.ndarray:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"image {key} out of range for {n} images")
            return self._read(np.array([i]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                return self._slice(start, max(start, stop))
            return self._read(np.arange(start, stop, step))
        idx = np.asarray(key.cpu() if isinstance(key, Tensor) else key)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of shape {idx.shape} for {n} images")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"index rows with an int, a slice or a 1-d int array, got {key!r}")
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for {n} images")
        return self._read(np.where(idx < 0, idx + n, idx))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole (view of the) split in memory: what :func:`load_split` holds."""
        out = self._slice(0, len(self))
        return out if dtype is None else out.astype(dtype)

    # ------------------------------------------------------------------ streaming
    def rows(self, start: int, stop: int) -> ScaledImages:
        """Rows ``start:stop`` as a view (nothing is read)."""
        start, stop, _ = slice(start, stop).indices(len(self))
        view = ScaledImages.__new__(ScaledImages)
        view.__dict__.update(self.__dict__)
        view._start, view._stop = self._start + start, self._start + max(start, stop)
        return view

    def chunk_rows(self) -> int:
        """Rows per piece of :meth:`chunks`: at most 64 MiB of float32, at least one row."""
        return max(1, _CHUNK_VALUES // int(np.prod(self._row_shape)))

    def chunks(self, rows: int | None = None) -> Iterator[np.ndarray]:
        """The images in order, ``rows`` (default :meth:`chunk_rows`) at a time."""
        rows = rows or self.chunk_rows()
        for start in range(0, len(self), rows):
            yield self._slice(start, min(start + rows, len(self)))

    def close(self) -> None:
        """Close the file this view reads (reopened on the next read)."""
        if isinstance(self._src, RowReader):
            self._src.close()

    def _slice(self, start: int, stop: int) -> np.ndarray:
        a, b = self._start + start, self._start + stop
        src = self._src
        return self._scale(src.slice(a, b) if isinstance(src, RowReader) else src[a:b])

    def _read(self, idx: np.ndarray) -> np.ndarray:
        rows = idx.astype(np.int64) + self._start
        src = self._src
        return self._scale(src.take(rows) if isinstance(src, RowReader) else src[rows])

    def _scale(self, stored: np.ndarray) -> np.ndarray:
        if stored.shape[0] == 0:
            return np.empty((0, *self._row_shape), np.float32)
        return to_model_range(stored, self.size).numpy()  # (B, C, S, S) float32

    def __repr__(self) -> str:
        where = self.filename or "memory"
        return f"ScaledImages({where}, shape={self.shape}, size={self.size})"


def _split_dir(root: str | Path, split: str) -> Path:
    path = Path(root) / split
    if not (path / "meta.json").is_file():
        raise DataError(
            f"{path}: no {split!r} split; evaluation needs a processed dataset with train/test "
            f"splits (run `ganops data preprocess {Path(root).name}`)"
        )
    return path


def open_split(root: str | Path, split: str, image_size: int | None = None) -> ImageSet:
    """A processed split whose images are a :class:`ScaledImages` over its memory-mapped file:
    float32 [-1, 1] at ``image_size`` when indexed, equal to :func:`load_split`'s, while only
    the rows being used are in memory. A truncated or damaged file is a :class:`DataError`
    naming it."""
    ds = read_imageset(_split_dir(root, split), mmap=True)
    if ds.kind != "images":
        raise DataError(
            f"{Path(root) / split}: expected an image dataset (array images), got {ds.kind!r}"
        )
    return ImageSet({"images": ScaledImages(ds.images, image_size)}, ds.labels, ds.meta)  # type: ignore[dict-item]


def load_split(root: str | Path, split: str, image_size: int | None = None) -> ImageSet:
    """A processed split as float32 [-1, 1] images, resized like the trainer resizes them."""
    ds = read_imageset(_split_dir(root, split))
    images = to_model_range(ds.images, image_size).numpy()  # (N, C, S, S)
    return ImageSet({"images": images}, ds.labels, ds.meta)


def _unpaired(root: str | Path, split: str, mmap: bool) -> ImageSet:
    path = Path(root) / split
    if not (path / "meta.json").is_file():
        raise DataError(
            f"{path}: no {split!r} split; evaluating a translation needs a processed unpaired "
            f"dataset with train/test splits (run `ganops data preprocess {Path(root).name}`)"
        )
    ds = read_imageset(path, mmap=mmap)
    if ds.kind != "unpaired":
        raise DataError(f"{path}: expected an unpaired dataset (arrays a and b), got {ds.kind!r}")
    return ds


def load_unpaired_split(root: str | Path, split: str, size: int | None) -> dict[str, np.ndarray]:
    """Both domains of a processed unpaired split as float32 [-1, 1] (N, C, size, size)."""
    ds = _unpaired(root, split, mmap=False)
    return {k: to_model_range(ds.arrays[k], size).numpy() for k in ("a", "b")}


def open_unpaired_split(root: str | Path, split: str, size: int | None) -> dict[str, ScaledImages]:
    """Both domains of a processed unpaired split as :class:`ScaledImages` over their
    memory-mapped files: :func:`load_unpaired_split`'s values, read a batch at a time."""
    ds = _unpaired(root, split, mmap=True)
    return {k: ScaledImages(ds.arrays[k], size) for k in ("a", "b")}
