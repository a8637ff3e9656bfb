"""In-memory batches with a resumable, seeded order (no DataLoader: data sets here fit in memory).

Every epoch is a permutation drawn from ``seed + epoch``, so the position (epoch, index) is the
whole state: a resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gan_models.data.format import KINDS, ImageSet, read_imageset
from gan_models.errors import DataError
from gan_models.families.base import Batch, DataSpec


def to_model_range(arr: np.ndarray, size: int | None) -> Tensor:
    """uint8 0..255 or float32 -1..1 (N, C, H, W) -> float32 -1..1 tensor, resized to ``size``."""
    x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()  # (N, C, H, W)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        x = x.clamp_(-1.0, 1.0)
    return x


def load_training_set(path: str | Path, split: str | None = None) -> ImageSet:
    root = Path(path)
    if split:
        root = root / split
    if not root.exists():
        raise DataError(
            f"data.path: {root} does not exist; fetch it with `ganops data fetch` "
            "(or preprocess it with `ganops data preprocess`)"
        )
    return read_imageset(root)


class BatchStream:
    """Endless seeded batches of one dataset; ``state_dict`` is its exact position."""

    def __init__(
        self,
        data: ImageSet,
        image_size: int,
        batch_size: int,
        seed: int,
        device: torch.device,
    ):
        self.kind = data.kind
        self.keys = KINDS[self.kind]
        sizes = {"a": None, "b": image_size, "images": image_size}
        if self.kind == "unpaired":
            sizes["a"] = image_size
        self.tensors = {k: to_model_range(data.arrays[k], sizes[k]).to(device) for k in self.keys}
        self.labels = (
            torch.from_numpy(data.labels.astype(np.int64)).to(device)
            if data.labels is not None
            else None
        )
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.lengths = {k: v.shape[0] for k, v in self.tensors.items()}
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
        self._perm: dict[str, Tensor] = {}

    def spec(self) -> DataSpec:
        first = self.tensors[self.keys[-1]]  # the target images
        num_classes = None
        if self.labels is not None:
            num_classes = int(self.labels.max().item()) + 1
        a = self.tensors.get("a")
        return DataSpec(
            channels=first.shape[1],
            image_size=first.shape[-1],
            num_classes=num_classes,
            kind=self.kind,
            input_size=a.shape[-1] if a is not None else None,
            input_channels=a.shape[1] if a is not None else None,
        )

    def _indices(self, stream: str) -> Tensor:
        n = self.lengths[stream]
        if self.pos[stream] + self.batch_size > n:  # drop the last partial batch
            self.epoch[stream] += 1
            self.pos[stream] = 0
            self._perm.pop(stream, None)
        if stream not in self._perm:
            offset = 0 if stream in ("all", "a") else 1_000_003
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch[stream] + offset)
            self._perm[stream] = torch.randperm(n, generator=g).to(self.device)
        idx = self._perm[stream][self.pos[stream] : self.pos[stream] + self.batch_size]
        self.pos[stream] += self.batch_size
        return idx  # (B,)

    def next(self) -> Batch:
        if self.kind == "unpaired":
            return {k: self.tensors[k][self._indices(k)] for k in self.keys}
        idx = self._indices("all")
        batch = {k: self.tensors[k][idx] for k in self.keys}
        if self.labels is not None:
            batch["label"] = self.labels[idx]
        if self.kind == "images":
            batch["image"] = batch.pop("images")
        return batch

    def state_dict(self) -> dict:
        return {"epoch": dict(self.epoch), "pos": dict(self.pos)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = dict(state["epoch"])
        self.pos = dict(state["pos"])
        self._perm.clear()
