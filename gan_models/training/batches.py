"""Seeded, resumable batches, streamed from disk or cached whole, assembled by a background thread.

Every epoch is a permutation drawn from ``seed + epoch``, so the position (epoch, index) is the
whole state: a resumed run sees exactly the batches an uninterrupted run would have seen, with
or without prefetching (the prefetcher replays the same order on its own copy of the position;
the stream's state is the position of the batches handed out, never of those read ahead).

Data stays in its stored dtype (uint8, or float32 for processed sets written before format 2)
until a batch reaches the device, where it is scaled to [-1, 1] and resized. A split whose
arrays fit ``data.cache_mb`` (default: :func:`auto_cache_bytes`) is read into memory once;
a larger one is read row by row with positional reads, so memory does not grow with the
number of images.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gan_models.data.format import KINDS, ImageSet, read_imageset
from gan_models.data.splits import scale_to_model
from gan_models.data.stream import RowReader, reader, take
from gan_models.errors import DataError
from gan_models.families.base import Batch, DataSpec

# Larger default caches buy nothing measurable: a streamed batch costs well under 1% of a step.
_AUTO_CACHE_CAP = 1 << 30


def auto_cache_bytes() -> int:
    """The default cache budget: an eighth of physical memory, at most 1 GiB."""
    try:
        phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        phys = 8 << 30
    return int(min(_AUTO_CACHE_CAP, phys // 8))


def load_training_set(path: str | Path, split: str | None = None) -> ImageSet:
    """A dataset directory with its arrays memory-mapped (nothing is read until indexed)."""
    root = Path(path)
    if split:
        root = root / split
    if not root.exists():
        raise DataError(
            f"data.path: {root} does not exist; fetch it with `ganops data fetch` "
            "(or preprocess it with `ganops data preprocess`)"
        )
    return read_imageset(root, mmap=True)


def _source(arr: np.ndarray, stream: bool) -> np.ndarray | RowReader:
    """How one array is read: in memory as stored, or row by row from its file."""
    if not isinstance(arr, np.memmap):
        return arr
    if stream:
        return reader(arr)  # row by row; a memmap that is not plain C-ordered: numpy reads
    try:
        src = reader(arr)  # cached: one sequential read, not through the mapping (which would
        # count the file twice in the process's memory)
        if not isinstance(src, RowReader):
            return np.array(arr)
        whole = src.slice(0, len(src))
        src.close()
        return whole
    except (OSError, ValueError) as e:
        raise DataError(f"{arr.filename}: cannot read ({e})") from None


class _Order:
    """The seeded batch order of one or two streams; (epoch, pos) per stream is its state."""

    def __init__(self, lengths: dict[str, int], batch_size: int, seed: int, state: dict):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = dict(state["epoch"])
        self.pos = dict(state["pos"])
        self._perm: dict[str, Tensor] = {}

    def indices(self, stream: str) -> Tensor:
        n = self.lengths[stream]
        if self.pos[stream] + self.batch_size > n:  # drop the last partial batch
            self.epoch[stream] += 1
            self.pos[stream] = 0
            self._perm.pop(stream, None)
        if stream not in self._perm:
            offset = 0 if stream in ("all", "a") else 1_000_003
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch[stream] + offset)
            self._perm[stream] = torch.randperm(n, generator=g)
        idx = self._perm[stream][self.pos[stream] : self.pos[stream] + self.batch_size]
        self.pos[stream] += self.batch_size
        return idx  # (B,)

    def state(self) -> dict:
        return {"epoch": dict(self.epoch), "pos": dict(self.pos)}


class _Prefetcher:
    """A daemon thread that assembles the next ``depth`` host batches in the stream's order."""

    def __init__(self, make, depth: int):
        self._make = make
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ganops-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item = ("ok", self._make())
                while not self._stop.is_set():
                    try:
                        self._q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # handed to the training thread, which raises it
            self._q.put(("error", e))

    def get(self) -> Any:
        kind, value = self._q.get()
        if kind == "error":
            self.close()
            raise value
        return value

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._q.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)


class BatchStream:
    """Endless seeded batches of one dataset; ``state_dict`` is its exact position.

    Args:
        data: the dataset; memory-mapped arrays (``load_training_set``) may be streamed,
            in-memory arrays are used as they are.
        cache_bytes: arrays of at most this many bytes in total are read into memory whole;
            ``None`` = :func:`auto_cache_bytes`, 0 = always stream.
        prefetch: host batches assembled ahead by a background thread (0 = in this thread).
        memory_format: of the image tensors handed out (``torch.channels_last`` for the fast
            profile).
        shard: (rank, world) of a data-parallel run: the order and the state stay those of the
            global batch of ``batch_size``, and this rank is handed its contiguous slice of
            ``batch_size // world`` rows of it (see ``gan_models.utils.batch_shard``).
    """

    def __init__(
        self,
        data: ImageSet,
        image_size: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        *,
        cache_bytes: int | None = None,
        prefetch: int = 2,
        memory_format: torch.memory_format = torch.contiguous_format,
        shard: tuple[int, int] = (0, 1),
    ):
        self.kind = data.kind
        self.keys = KINDS[self.kind]
        self.sizes: dict[str, int | None] = {"a": None, "b": image_size, "images": image_size}
        if self.kind == "unpaired":
            self.sizes["a"] = image_size
        arrays = {k: data.arrays[k] for k in self.keys}
        budget = auto_cache_bytes() if cache_bytes is None else cache_bytes
        total = sum(int(a.nbytes) for a in arrays.values())
        self.streamed = total > budget and any(isinstance(a, np.memmap) for a in arrays.values())
        self.sources = {k: _source(a, self.streamed) for k, a in arrays.items()}
        self.shapes = {k: tuple(a.shape) for k, a in arrays.items()}
        self.labels = (
            torch.from_numpy(np.asarray(data.labels).astype(np.int64))
            if data.labels is not None
            else None
        )
        self.batch_size = batch_size
        self.rank, self.world = shard
        self.local_batch = batch_size // self.world
        self.seed = seed
        self.device = device
        self.prefetch = prefetch
        self.memory_format = memory_format
        self.pin = device.type == "cuda"
        self.lengths = {k: s[0] for k, s in self.shapes.items()}
        if self.kind != "unpaired":
            self.lengths = {"all": self.lengths[self.keys[0]]}
        for name, n in self.lengths.items():
            if n < batch_size:
                raise DataError(
                    f"train.batch_size: {batch_size} is larger than the dataset "
                    f"({n} images in {name!r}); lower it or use more data"
                )
        self.epoch = dict.fromkeys(self.lengths, 0)
        self.pos = dict.fromkeys(self.lengths, 0)
        self._order: _Order | None = None
        self._prefetcher: _Prefetcher | None = None

    def _shape_at(self, key: str) -> tuple[int, int]:
        """(channels, side) of ``key``'s images as handed out."""
        _, c, h, _ = self.shapes[key]
        return c, self.sizes[key] or h

    def spec(self) -> DataSpec:
        channels, size = self._shape_at(self.keys[-1])  # the target images
        num_classes = None
        if self.labels is not None:
            num_classes = int(self.labels.max().item()) + 1
        a = self._shape_at("a") if "a" in self.shapes else None
        return DataSpec(
            channels=channels,
            image_size=size,
            num_classes=num_classes,
            kind=self.kind,
            input_size=a[1] if a is not None else None,
            input_channels=a[0] if a is not None else None,
        )

    def _host_batch(self, order: _Order) -> tuple[dict[str, Tensor], dict]:
        """The next batch as stored (uint8 or float32) on the host, and the position after it."""
        if self.kind == "unpaired":
            idx = {k: order.indices(k) for k in self.keys}
        else:
            shared = order.indices("all")
            idx = dict.fromkeys(self.keys, shared)
        if self.world > 1:  # every rank draws the global order and keeps its own rows
            lo = self.rank * self.local_batch
            idx = {k: v[lo : lo + self.local_batch] for k, v in idx.items()}  # (B / world,)
        host = {k: torch.from_numpy(take(self.sources[k], idx[k].numpy())) for k in self.keys}
        if self.labels is not None and self.kind != "unpaired":
            host["label"] = self.labels[idx[self.keys[0]]]
        if self.pin:
            host = {k: v.pin_memory() for k, v in host.items()}
        return host, order.state()

    def _device_batch(self, host: dict[str, Tensor]) -> Batch:
        batch: Batch = {}
        for k, v in host.items():
            v = v.to(self.device, non_blocking=self.pin)
            if k != "label":
                v = scale_to_model(v, self.sizes[k])  # (B, C, H, W) in [-1, 1], on the device
                if self.memory_format is not torch.contiguous_format:
                    v = v.contiguous(memory_format=self.memory_format)
            batch[k] = v
        if self.kind == "images":
            batch["image"] = batch.pop("images")
        return batch

    def next(self) -> Batch:
        if self.prefetch > 0:
            if self._prefetcher is None:
                order = _Order(self.lengths, self.batch_size, self.seed, self.state_dict())
                self._prefetcher = _Prefetcher(lambda: self._host_batch(order), self.prefetch)
            host, state = self._prefetcher.get()
        else:
            if self._order is None:
                self._order = _Order(self.lengths, self.batch_size, self.seed, self.state_dict())
            host, state = self._host_batch(self._order)
        self.epoch, self.pos = state["epoch"], state["pos"]
        return self._device_batch(host)

    def state_dict(self) -> dict:
        return {"epoch": dict(self.epoch), "pos": dict(self.pos)}

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.epoch = dict(state["epoch"])
        self.pos = dict(state["pos"])

    def close(self) -> None:
        """Stop the prefetcher (a new one starts at the next ``next``) and close open files."""
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None
        self._order = None
        for src in self.sources.values():
            if isinstance(src, RowReader):
                src.close()
