"""Benchmarks that report ratios against a reference run in the same process.

``bench_train``: the trainer with its default features on (EMA, progress bar, stats every 50
steps, deterministic kernels on CPU) against a bare PyTorch loop of the same networks, losses and
optimizers on the same threads (and, for the exact profile on CPU, the bare loop on every core
too). Rounds alternate trainer and bare loops so that machine noise hits them alike.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gan_models.data.format import ImageSet
from gan_models.data.splits import to_model_range
from gan_models.families import get_family
from gan_models.training import StepInfo, train
from gan_models.training.batches import BatchStream
from gan_models.training.device import select_device
from gan_models.training.params import TrainParams
from gan_models.utils.determinism import DETERMINISTIC_THREADS, pinned_threads


def _synthetic(n: int, channels: int, size: int) -> ImageSet:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8)
    return ImageSet({"images": images}, None, {"kind": "images"})


def time_trainer(params: TrainParams, data: ImageSet, warmup: int, steps: int) -> float:
    """Seconds for ``steps`` trainer steps after ``warmup``; run setup and the end are outside."""
    marks: dict[int, float] = {}

    def clock(info: StepInfo) -> None:
        if info.step in (warmup, warmup + steps):
            marks[info.step] = time.perf_counter()

    p = params.model_copy(deep=True)
    p.train.steps = warmup + steps + 1  # the final step's checkpoint falls outside the window
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        train(p, tmp, data=data, callbacks=[clock])
    return marks[warmup + steps] - marks[warmup]


def _time_bare(params: TrainParams, data: ImageSet, warmup: int, steps: int) -> float:
    """The same networks, loss and Adam in a plain loop, as one would write it by hand."""
    family = get_family(params.model.family)
    device = select_device(params.train.device)
    t = params.train
    stream = BatchStream(data, params.data.image_size, t.batch_size, t.seed, device)
    nets = family.build(params, stream.spec())
    G, D = nets["G"].to(device).train(), nets["D"].to(device).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr, betas=t.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr, betas=t.betas)
    real_all = to_model_range(data.images, params.data.image_size).to(device)  # (N, C, H, W)
    n, b, z = real_all.shape[0], t.batch_size, params.model.latent_dim
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        idx = torch.randint(0, n, (b,), device=device)
        real = real_all[idx]  # (B, C, H, W)
        G.requires_grad_(False)
        D.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        fake = G(torch.randn(b, z, device=device)).detach()
        loss_d = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        loss_d.backward()
        opt_d.step()
        G.requires_grad_(True)
        D.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        loss_g = F.softplus(-D(G(torch.randn(b, z, device=device)))).mean()
        loss_g.backward()
        opt_g.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_train(
    family: str = "dcgan",
    image_size: int = 64,
    batch_size: int = 64,
    channels: int = 3,
    steps: int = 50,
    warmup: int = 3,
    rounds: int = 3,
    width: int = 64,
    latent_dim: int = 100,
    device: str = "auto",
    amp: str = "none",
    profile: str = "exact",
) -> dict[str, Any]:
    """Images/s of the trainer and of a bare fp32 loop, and their ratio (trainer / bare).

    With ``profile="fast"`` the trainer runs its fast profile while the bare loop stays the
    plain fp32 one: the ratio is what the profile buys over the loop one would write by hand.
    """
    if family not in ("vanilla", "dcgan"):
        raise ValueError("the bare reference loop is written for vanilla and dcgan")
    params = TrainParams(
        model={"family": family, "width": width, "latent_dim": latent_dim},
        data={"image_size": image_size},
        train={"batch_size": batch_size, "device": device, "amp": amp, "profile": profile},
    )
    data = _synthetic(max(batch_size * 8, 512), channels, image_size)
    # The exact profile on CPU computes on DETERMINISTIC_THREADS threads (the same weights on any
    # core count). The loop's own overhead is measured against the bare loop on those threads;
    # the bare loop on every core says what that bit-exactness costs on this machine.
    dev = select_device(device)
    pins = profile == "exact" and dev.type == "cpu" and params.train.deterministic is not False
    trainer_s, bare_s, bare_all_s = [], [], []
    for _ in range(rounds):
        trainer_s.append(time_trainer(params, data, warmup, steps))
        with pinned_threads(pins):
            bare_s.append(_time_bare(params, data, warmup, steps))
        if pins:
            bare_all_s.append(_time_bare(params, data, warmup, steps))
    images = steps * batch_size * rounds
    ips, bare_ips = images / sum(trainer_s), images / sum(bare_s)
    all_threads: dict[str, Any] = {}
    if pins:
        all_ips = images / sum(bare_all_s)
        all_threads = {
            "bare_all_threads_seconds": [round(x, 3) for x in bare_all_s],
            "bare_all_threads_images_per_s": round(all_ips, 2),
            "ratio_vs_all_threads": round(ips / all_ips, 4),
        }
    return {
        "benchmark": "train",
        "family": family,
        "image_size": image_size,
        "batch_size": batch_size,
        "profile": profile,
        "steps_per_round": steps,
        "rounds": rounds,
        "device": str(select_device(device)),
        "threads": torch.get_num_threads(),
        "trainer_threads": DETERMINISTIC_THREADS if pins else torch.get_num_threads(),
        "trainer_seconds": [round(s, 3) for s in trainer_s],
        "bare_seconds": [round(s, 3) for s in bare_s],
        "images_per_s": round(ips, 2),
        "bare_images_per_s": round(bare_ips, 2),
        "ratio": round(ips / bare_ips, 4),
        **all_threads,
    }
