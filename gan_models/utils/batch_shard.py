"""Which slice of the global batch this process trains on, and random draws that follow it.

Data-parallel training (``gan_models.training.distributed``) splits every global batch of
``train.batch_size`` into equal, contiguous slices, one per rank. For a run on W ranks to equal
one process training on the whole batch, every random draw made per sample (latents, labels, the
gradient penalty's interpolation weights, DiffAugment's parameters) must be drawn for the whole
global batch from the same RNG state on every rank and then sliced: each rank then holds exactly
the values one process would have given to its samples, and every rank's RNG advances as one
process's would. The trainer sets the shard for the duration of a run (:func:`batch_shard`);
outside it the shard is the whole batch and :func:`draw` is a plain draw.

It lives at the base layer because the families' loss code (``gan_models.losses``) draws
through it, and those modules sit below the trainer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``world`` takes rows [rank * n, (rank + 1) * n) of a global batch n * world."""

    rank: int = 0
    world: int = 1

    def take(self, full: Tensor, n: int) -> Tensor:
        """This rank's ``n`` rows of ``full`` (n * world, ...)."""
        return full[self.rank * n : (self.rank + 1) * n]


_current = Shard()


def current() -> Shard:
    return _current


@contextlib.contextmanager
def batch_shard(rank: int, world: int) -> Iterator[Shard]:
    """Within the block, per-sample draws are made for ``world`` times the local batch."""
    global _current
    previous, _current = _current, Shard(rank, world)
    try:
        yield _current
    finally:
        _current = previous


def draw(fn: Callable[[int], Tensor], n: int) -> Tensor:
    """``fn(n)`` for this rank's n samples: ``fn(n * world)`` sliced to this rank's rows.

    ``fn`` draws its first dimension's size as given, e.g. ``lambda m: torch.randn(m, 8)``.
    """
    shard = _current
    if shard.world == 1:
        return fn(n)
    return shard.take(fn(n * shard.world), n)
