"""What a data source yields: named uint8 arrays, optional labels and class names, lineage."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gan_models.data.stream import NpyWriter


@dataclass
class ChunkedArray:
    """An array that is never held whole: its shape and dtype, and ``chunks``, which produces
    its rows in order, a chunk at a time (decoded images, rows of an array file).

    :func:`gan_models.data.format.write_imageset` writes it to a ``.npy`` chunk by chunk (the
    bytes ``np.save`` writes for the whole array), so memory stays flat at any size;
    ``np.asarray`` gathers it in memory. Lineage computed while reading (a digest of the files)
    is added by the producer to a dict of the source's ``origin`` once the last chunk is read,
    before meta.json is written.
    """

    shape: tuple[int, ...]
    chunks: Callable[[], Iterator[np.ndarray]]
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.uint8))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def write(self, path: Path) -> None:
        """Write the rows to the ``.npy`` file ``path`` as they come."""
        writer = NpyWriter(path, self.shape, self.dtype)
        try:
            for rows in self.chunks():
                writer.write(rows)
                del rows  # one chunk alive at a time: not this one while the next is made
        finally:
            writer._f.close()
        writer.close()  # checks the row count

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        done = 0
        for rows in self.chunks():
            out[done : done + len(rows)] = rows
            done += len(rows)
        if done != self.shape[0]:
            raise ValueError(f"{done} rows produced, {self.shape[0]} declared")
        return out if dtype is None else out.astype(dtype, copy=False)


@dataclass
class Loaded:
    """What a source yields: named uint8 arrays (N, C, H, W), optional labels and lineage.

    Large sources (image folders, array files) give :class:`ChunkedArray` s, read only when the
    dataset is written. ``meta`` holds further top-level keys of meta.json (a licence, each
    image's file or codepoint)."""

    arrays: dict[str, np.ndarray | ChunkedArray]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    origin: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
