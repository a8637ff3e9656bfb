"""Which slice of the global batch this process trains on, and random draws that follow it.

Data-parallel training (``gan_models.training.distributed``) splits every global batch of
``train.batch_size`` into equal, contiguous slices, one per rank. For a run on W ranks to equal
one process training on the whole batch, every random draw made per sample (latents, labels, the
gradient penalty's interpolation weights, DiffAugment's parameters) must be drawn for the whole
global batch from the same RNG state on every rank and then sliced: each rank then holds exactly
the values one process would have given to its samples, and every rank's RNG advances as one
process's would. The trainer sets the shard for the duration of a run (:func:`batch_shard`);
outside it the shard is the whole batch and :func:`draw` is a plain draw.

A few layers need the whole global batch rather than their rank's rows: StyleGAN's
minibatch-stddev groups samples across it and its tracked average style is a mean over it;
CycleGAN's history of fakes and the input banks of the image-to-image families keep what one
process would keep. They see it through :func:`gather` (and :func:`gather_grad` where gradients
flow back through it) and :func:`mean_rows`; with one process these are the identity and a plain
mean.

It lives at the base layer because the families' loss code (``gan_models.losses``) draws
through it, and those modules sit below the trainer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
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


def gather(x: Tensor) -> Tensor:
    """The global batch (n * world, ...) of which ``x`` (n, ...) is this rank's slice, in rank
    order (so in the global batch's order); no gradient flows back through it."""
    if _current.world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_current.world)]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


def gather_grad(x: Tensor) -> Tensor:
    """:func:`gather`, differentiably: the gradient reaching this rank's rows is the sum of every
    rank's gradient for them, as one process would compute on the whole batch."""
    if _current.world == 1:
        return x
    return _GatherRows.apply(x, _current.rank, _current.world)


def mean_rows(x: Tensor) -> Tensor:
    """The mean over the first dimension of the global batch (without gradient)."""
    if _current.world == 1:
        return x.mean(0)
    total = x.detach().sum(0)
    dist.all_reduce(total)
    return total / (x.shape[0] * _current.world)


# The sum over ranks that autograd sees through: the backward of a sum of every rank's value is
# the sum of every rank's incoming gradient (as torch.distributed.nn's, deprecated in this torch).
class _SumOverRanks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return _SumOverRanks.apply(grad)


def sum_over_ranks(x: Tensor) -> Tensor:
    """``x`` summed over the ranks, differentiably."""
    return _SumOverRanks.apply(x)


# All-gather whose backward is its adjoint (every rank's gradient summed, this rank's rows kept),
# built from _SumOverRanks so that a gradient of a gradient (R1) flows through it too.
class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, rank: int, world: int) -> Tensor:
        ctx.rank, ctx.n = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows = _SumOverRanks.apply(grad)[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]
        return rows, None, None
