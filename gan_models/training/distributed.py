"""Data-parallel training inside one rank: the process group, gradient and loss reduction, a
batch norm over the global batch, and what rank 0 tells the others.

A run on W ranks (launched by ``ganops train --nproc-per-node``, see
:mod:`gan_models.training.launch`) trains exactly what one process would train on the same
global batch of ``train.batch_size``:

- every rank builds the same networks from the same seed and draws the same global batch order,
  latents, labels and augmentation parameters, keeping its contiguous slice of each
  (``BatchStream(shard=...)``, :mod:`gan_models.utils.batch_shard`), so all RNGs advance alike;
- the loss of each phase is a mean over the rank's B / W samples, so the mean of the ranks'
  gradients (:func:`average_gradients`) is the gradient of the global batch's mean loss, and
  the logged losses are the means over ranks (:func:`mean_over_ranks`);
- batch norm normalises with the statistics of the global batch (:class:`GlobalBatchNorm`);
  the few layers that look across samples otherwise (StyleGAN's minibatch stddev and average
  style, CycleGAN's history of fakes, the input banks) gather the global batch themselves
  (:func:`gan_models.utils.batch_shard.gather`).

Every family of the zoo trains this way (``tests/test_ddp.py`` checks each against one process).

Gradients are averaged with one all_reduce per optimizer step after ``backward`` rather than by
``DistributedDataParallel``: the trainer's phases call a network several times before one
backward (D on real, then on fake) and freeze the networks a phase does not step, which DDP's
reducer only accepts with ``find_unused_parameters`` and no bucket overlap to gain on CPU.

Rank 0 alone touches the run folder and tracking; the others receive what it read (the resume
decision, the checkpoint) by broadcast, so nodes need no shared file system.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gan_models.errors import ConfigError, GanopsError
from gan_models.utils.batch_shard import sum_over_ranks

# How long a collective waits for a rank before failing: a rank that died is noticed by the
# launcher (which ends the others) well before this; it bounds a hang the launcher cannot see.
TIMEOUT_ENV = "GANOPS_DDP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank ``rank`` of ``world``, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def device(self, device: torch.device) -> torch.device:
        """One GPU per rank (its LOCAL_RANK); CPU stays CPU."""
        if self.parallel and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; ``obj`` is ignored on the others)."""
        if not self.parallel:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank (e.g. a stop request seen by one)."""
        if not self.parallel:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


def env_world() -> Dist:
    """The rank, world size and local rank that a launcher (torchrun) put in the environment."""
    env = os.environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return Dist()
    return Dist(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))


def _timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}: expected seconds, got {raw!r}") from None
    return timedelta(seconds=seconds)


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextlib.contextmanager
def session(device_name: str) -> Iterator[Dist]:
    """Join the process group a launcher describes in the environment for the block.

    Outside a launcher (or with one rank) this is a no-op yielding a world of one. The group is
    joined once per process and left open for the next ``train()`` in it (a second
    ``init_process_group`` on the launcher's store after a destroy waits forever); it is
    destroyed when the process exits.
    """
    here = env_world()
    if not here.parallel:
        yield Dist()
        return
    if not dist.is_initialized():
        cuda = device_name in ("cuda", "auto") and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(here.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=_timeout())
        atexit.register(_leave)
    yield here


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_parallel(batch_size: int, world: int) -> None:
    """Refuse what a ``world``-rank run cannot train as one process would."""
    if world > 1 and batch_size % world:
        raise ConfigError(
            f"train.batch_size: {batch_size} is not divisible by the {world} ranks; "
            "the global batch is split into equal shards"
        )


def check_world(saved: int, world: int, where: str) -> None:
    """Resume only with the world size the checkpoint was trained with."""
    if saved != world:
        raise GanopsError(
            f"{where}: the run was trained on {saved} process(es), not {world}; resume it with "
            f"--nproc-per-node/--nnodes giving {saved} in all (a different world size sums "
            "the batch in another order, so the run would not continue exactly)"
        )


def average_gradients(params: Iterable[nn.Parameter], world: int) -> None:
    """Each gradient replaced by its mean over the ranks, in one all_reduce."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_ranks(values: dict[str, Any], world: int) -> dict[str, Tensor]:
    """{key: mean over the ranks of the scalar ``values[key]``}; every rank gets the same."""
    keys = sorted(values)
    if not keys:
        return {}
    t = torch.stack([torch.as_tensor(values[k], dtype=torch.float32).reshape(()) for k in keys])
    t = t.to(_collective_device())
    dist.all_reduce(t)
    t = (t / world).cpu()
    return {k: t[i] for i, k in enumerate(keys)}


# Batch norm over the global batch of a data-parallel run (Ioffe & Szegedy 2015, as
# SyncBatchNorm, which refuses CPU tensors in this torch): the per-channel mean and variance
# are summed over ranks with the differentiable all_reduce, so outputs, gradients and running
# statistics are those of one process seeing the whole batch. Same parameters and buffers as
# nn.BatchNorm*d, so checkpoints and generator files keep their keys.
class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        world = dist.get_world_size()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.numel() // x.shape[1] * world  # values per channel in the global batch
        mean = sum_over_ranks(x.sum(dims)) / count  # (C,)
        centred = x - mean.view(shape)
        var = sum_over_ranks(centred.pow(2).sum(dims)) / count  # (C,) biased, as BN normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                if m is None:  # cumulative moving average, as nn.BatchNorm does
                    m = 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (count / max(count - 1, 1))
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every nn.BatchNorm1d/2d/3d replaced by a GlobalBatchNorm holding its
    parameters and buffers (the same tensors)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        new = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean = module.running_mean
            new.running_var = module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, global_batchnorm(child))
    return module
