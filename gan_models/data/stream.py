"""Reading and writing ``.npy`` arrays a few rows at a time, so memory stays flat at any size.

:class:`RowReader` reads chosen rows with positional reads (``os.preadv``): nothing is mapped,
so a process that walks a 200,000-image file holds only the rows it asked for. :class:`NpyWriter`
appends rows to a ``.npy`` file whose header (dtype, full shape) is written first; the bytes
are those ``np.save`` writes for the whole array.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from gan_models.errors import DataError


class RowReader:
    """Rows of a C-ordered ``.npy`` file (header at ``offset``) read with ``os.preadv``."""

    def __init__(self, path: str | Path, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path = str(path)
        self.offset = offset
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self._fd: int | None = None
        size = os.path.getsize(self.path)
        if size < offset + self.row_bytes * self.shape[0]:
            raise DataError(
                f"{self.path}: truncated ({size} bytes, its header promises "
                f"{offset + self.row_bytes * self.shape[0]}); re-run the stage that wrote it"
            )

    @classmethod
    def of(cls, arr: np.memmap) -> RowReader:
        """The reader of a memory-mapped array (``np.load(..., mmap_mode="r")``)."""
        return cls(arr.filename, arr.offset, arr.shape, arr.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (B,) in that order -> (B, ...) array."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        flat = out.reshape(len(idx), -1).view(np.uint8)
        for i, row in enumerate(np.asarray(idx).tolist()):
            got = os.preadv(self._fd, [flat[i]], self.offset + row * self.row_bytes)
            if got != self.row_bytes:
                raise DataError(
                    f"{self.path}: short read at image {row} ({got} of {self.row_bytes} bytes); "
                    "the file is truncated or was replaced while it was read"
                )
        return out

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` in sequential reads of at most 1 GiB each."""
        stop = min(stop, self.shape[0])
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((stop - start, *self.shape[1:]), dtype=self.dtype)
        flat = out.reshape(-1).view(np.uint8)
        base, done = self.offset + start * self.row_bytes, 0
        while done < len(flat):
            got = os.preadv(self._fd, [flat[done : done + (1 << 30)]], base + done)
            if got <= 0:
                raise DataError(f"{self.path}: short read at byte {base + done}; truncated file")
            done += got
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def reader(arr: np.ndarray) -> np.ndarray | RowReader:
    """A :class:`RowReader` for a plain C-ordered memory-mapped array, else the array itself."""
    if isinstance(arr, np.memmap) and arr.filename and arr.flags.c_contiguous:
        return RowReader.of(arr)
    return arr


def take(src: np.ndarray | RowReader, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of an array or a reader, as a C-ordered array in memory."""
    return src.take(idx) if isinstance(src, RowReader) else np.ascontiguousarray(src[idx])


class NpyWriter:
    """Write an array of known ``shape`` and ``dtype`` to ``path`` in row chunks, in order."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype: np.dtype):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._f = open(self.path, "wb")  # noqa: SIM115 (closed by close(), chunks come later)
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(self._f, header)

    def write(self, rows: np.ndarray) -> None:
        if rows.dtype != self.dtype or rows.shape[1:] != self.shape[1:]:
            raise ValueError(f"rows {rows.dtype} {rows.shape} do not fit {self.dtype} {self.shape}")
        self._f.write(memoryview(np.ascontiguousarray(rows)).cast("B"))  # no copy
        self.rows += len(rows)

    def close(self) -> None:
        self._f.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows} rows written, {self.shape[0]} declared")


def fixed_mmap_threshold(nbytes: int = 1 << 20) -> bool:
    """Make glibc serve blocks over ``nbytes`` from the OS and give them back when freed.

    glibc raises its mmap threshold each time a large block is freed; afterwards blocks of a
    chunk's size come from heaps that fragment and grow over a long run of chunks (measured on
    ``ganops data preprocess`` at 64x64: 700 MB peak at 5,000 images, 815 MB at 20,000; with the
    threshold fixed 693 and 718 MB). For commands that stream chunks in a process of their own:
    it holds for the whole process. Elsewhere than glibc it does nothing; returns whether it
    applied.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, nbytes))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False
