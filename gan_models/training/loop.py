"""The trainer: one importable function that every entry point (CLI, DVC, Prefect, tests) calls.

It owns the loop, not the maths: a family supplies networks and loss phases (see
``gan_models.families.base``), the trainer does batches, backward, optimizer steps, AMP, EMA,
checkpoints, logging and sample grids. Run folder layout::

    RUN_DIR/config.yaml          resolved params
    RUN_DIR/spec.json            data spec the networks were built for
    RUN_DIR/log.txt              human-readable log
    RUN_DIR/stats.jsonl          one JSON record per ``train.log_every`` steps
    RUN_DIR/checkpoints/         step_XXXXXXXX.pt, full state, newest ``keep_checkpoints``
    RUN_DIR/samples/             step_XXXXXXXX.png grids from fixed latents
    RUN_DIR/generator.safetensors  final (EMA) generator weights
    RUN_DIR/run.json             summary once the run completes
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from gan_models.config import dump_yaml, load_params
from gan_models.data.format import ImageSet
from gan_models.errors import ConfigError, GanopsError
from gan_models.families import get_family
from gan_models.families.base import DataSpec, Family, Nets, StepContext
from gan_models.training.batches import BatchStream, load_training_set
from gan_models.training.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from gan_models.training.device import autocast, deterministic_mode, select_device
from gan_models.training.diffaugment import Augment, augment_critics
from gan_models.training.distributed import (
    Dist,
    average_gradients,
    check_parallel,
    check_world,
    global_batchnorm,
    mean_over_ranks,
    session,
)
from gan_models.training.ema import EMA
from gan_models.training.generate import generate_from_latents, generate_images
from gan_models.training.params import TrainParams, load_run_config
from gan_models.training.profile import resolve_profile
from gan_models.training.run_dir import (
    check_resume_config,
    clear_run,
    restart_reason,
    truncate_stats,
    write_curves,
)
from gan_models.training.stop import StopRequest, TrainingInterrupted
from gan_models.utils.batch_shard import batch_shard
from gan_models.utils.determinism import lineage as determinism_lineage
from gan_models.utils.images import interleave_pairs, save_grid_png
from gan_models.utils.io import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger("ganops.train")


class TrainingDiverged(GanopsError):
    """A loss became NaN or infinite."""


@dataclass
class StepInfo:
    """What a callback sees after each generator step (before its checkpoint is written).

    A callback may add scalars to ``metrics`` (e.g. ``fid``): they are written to stats.jsonl
    with the step's record and seen by the callbacks after it.
    """

    step: int  # steps completed
    total_steps: int
    losses: dict[str, float]  # filled on logging steps only, else empty
    nets: Nets
    ema_nets: Nets  # the EMA copies where the family has them, else the training networks
    run_dir: Path
    images_per_s: float | None
    family: Family
    params: TrainParams
    spec: DataSpec
    metrics: dict[str, float] = field(default_factory=dict)

    def generate(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n samples (n, C, H, W) in [-1, 1] from the EMA generator, on CPU."""
        return generate_images(self.family, self.ema_nets, self.params, self.spec, n, seed)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    seconds: float
    images_per_s: float | None
    final_losses: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None


def _make_optimizer(
    params: TrainParams, family: Family, group: str, modules: list[nn.Module], extra=None
):
    t = params.train
    lr = t.lr_d if (group in family.critic_groups and t.lr_d is not None) else t.lr
    weights = [p for m in modules for p in m.parameters()]
    if t.optimizer == "rmsprop":
        return torch.optim.RMSprop(weights, lr=lr, **(extra or {}))
    return torch.optim.Adam(weights, lr=lr, betas=t.betas, **(extra or {}))


def train(
    params: TrainParams | str | Path,
    run_dir: str | Path,
    *,
    resume: bool | Literal["auto"] = False,
    overrides: Sequence[str] = (),
    data: ImageSet | None = None,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
) -> TrainResult:
    """Train a GAN family as ``params`` describe and write everything into ``run_dir``.

    Args:
        params: a ``TrainParams`` or the path of a params YAML file.
        run_dir: the run folder (created). It must hold no checkpoint unless ``resume``.
        resume: continue from the newest checkpoint in ``run_dir``; in deterministic mode the
            result is bit-identical to an uninterrupted run. ``"auto"`` (what pipelines use)
            resumes an unfinished run with the same params and otherwise starts over in
            ``run_dir``: a finished run or one with other params is trained again from scratch.
        overrides: ``section.key=value`` strings applied when ``params`` is a path.
        data: an in-memory dataset instead of ``params.data.path`` (tests, benchmarks).
        callbacks: called after every step with a ``StepInfo``; an exception stops training
            (the last checkpoint stays, so the run can be resumed).

    Started by a launcher on several ranks (``ganops train --nproc-per-node N``: RANK and
    WORLD_SIZE in the environment), each rank trains its shard of every global batch and rank 0
    alone writes ``run_dir`` and runs ``callbacks`` (see ``gan_models.training.distributed``).
    """
    if not isinstance(params, TrainParams):
        params = load_params(params, TrainParams, list(overrides))
    with session(params.train.device) as dist:
        check_parallel(params.train.batch_size, dist.world)
        return _train_rank(params, Path(run_dir), resume, data, callbacks, dist)


def _train_rank(
    params: TrainParams,
    run_dir: Path,
    resume: bool | Literal["auto"],
    data: ImageSet | None,
    callbacks: Sequence[Callable[[StepInfo], None]],
    dist: Dist,
) -> TrainResult:
    family = get_family(params.model.family)
    t = params.train
    device = dist.device(select_device(t.device))
    # The fast profile gives up bit-exactness, so it also leaves the pinned, deterministic kernels.
    exact_cpu = device.type == "cpu" and t.profile == "exact"
    deterministic = t.deterministic if t.deterministic is not None else exact_cpu

    # Rank 0 reads the run folder and decides; the others follow its decision (or its error).
    found, refusal = None, None
    if dist.is_main:
        try:
            found = _resume_point(run_dir, params, resume)
        except GanopsError as e:
            refusal = e
    found, refusal = dist.broadcast((found, refusal))
    if refusal is not None:
        raise refusal

    handler = None
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        with (
            deterministic_mode(deterministic, device),
            resolve_profile(t.profile, t.amp, device).flags(),
            StopRequest() as stop,  # Ctrl-C handling until the run's last file is written
            batch_shard(dist.rank, dist.world),  # per-sample draws: global, then this shard
        ):
            resume_from = found if resume else None
            return _train(params, family, run_dir, device, resume_from, data, callbacks, stop, dist)
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def _resume_point(
    run_dir: Path, params: TrainParams, resume: bool | Literal["auto"]
) -> tuple[int, Path] | None:
    """The checkpoint to continue from, after clearing a run that ``"auto"`` starts over."""
    found = latest_checkpoint(run_dir)
    if resume == "auto" and found:
        reason = restart_reason(run_dir, params)
        if reason:
            clear_run(run_dir)
            found = None
            log.info("starting over in %s: %s", run_dir, reason)
    elif found and not resume:
        raise GanopsError(
            f"{run_dir} already holds a run (checkpoint at step {found[0]}); "
            "pass --resume to continue it or choose another --run-dir"
        )
    if resume is True and (run_dir / "config.yaml").exists():
        saved = load_run_config(run_dir / "config.yaml")
        check_resume_config(saved, params, run_dir)
    return found


def _train(
    params: TrainParams,
    family: Family,
    run_dir: Path,
    device: torch.device,
    resume_from: tuple[int, Path] | None,
    data: ImageSet | None,
    callbacks: Sequence[Callable[[StepInfo], None]],
    stop: StopRequest,
    dist: Dist,
) -> TrainResult:
    t = params.train
    main = dist.is_main  # the one rank that writes run_dir and runs the callbacks
    torch.manual_seed(t.seed)
    if data is None:
        data = load_training_set(params.data.path, params.data.split)
    profile = resolve_profile(t.profile, t.amp, device)
    stream = BatchStream(
        data,
        params.data.image_size,
        t.batch_size,
        t.seed,
        device,
        cache_bytes=None if params.data.cache_mb is None else int(params.data.cache_mb * 2**20),
        prefetch=params.data.prefetch,
        memory_format=profile.memory_format,
        shard=(dist.rank, dist.world),
    )
    spec = stream.spec()
    if family.conditional and not spec.num_classes:
        raise ConfigError(f"model.family: {family.name} needs labels; the dataset has none")
    if family.check:
        family.check(params, spec)

    if not main:
        callbacks = []  # tracking and evaluation are rank 0's
    if t.fid_every and main:
        from gan_models.metrics.config import FeaturesParams
        from gan_models.training.fid import fid_callback

        with torch.random.fork_rng(devices=[]):  # FID during training must not change the run
            callbacks = [fid_callback(params, FeaturesParams(device=device.type)), *callbacks]

    nets = {k: m.to(device).train() for k, m in family.build(params, spec).items()}
    if dist.parallel:  # before the optimizers: the swap keeps the same parameter tensors
        nets = {k: global_batchnorm(m) for k, m in nets.items()}
    profile.prepare(nets)
    optims = {
        g: _make_optimizer(
            params,
            family,
            g,
            [nets[n] for n in names],
            profile.optimizer_kwargs([p for n in names for p in nets[n].parameters()]),
        )
        for g, names in family.optim_groups.items()
    }
    emas = {n: EMA(nets[n], t.ema_decay) for n in family.ema_nets} if t.ema_decay else {}
    phases = family.phases(params, spec)
    augment, loss_nets = None, nets
    if t.augment:  # the phases see the critics through the augmentation (DiffAugment)
        augment = Augment(t.augment, t.augment_p, t.seed, device)
        critics = [n for g in family.critic_groups for n in family.optim_groups[g]]
        loss_nets = augment_critics(nets, critics, augment)
        log.info("DiffAugment %s (p=%g) on %s", ",".join(t.augment), t.augment_p, critics)
    scaler = torch.amp.GradScaler(device.type) if t.amp == "fp16" else None

    if main:
        write_text_atomic(run_dir / "config.yaml", dump_yaml(params))
        write_json_atomic(run_dir / "spec.json", asdict(spec))
    stats_path = run_dir / "stats.jsonl"
    start = 0
    saved_window = None
    if resume_from:
        start, path = resume_from
        state, refusal = None, None
        if main:  # read once and sent: the other ranks may be on nodes without run_dir
            try:
                state = load_checkpoint(path, "cpu" if dist.parallel else device)
                check_world(state.get("world_size", 1), dist.world, str(path))
            except GanopsError as e:
                state, refusal = None, e
        state, refusal = dist.broadcast((state, refusal))
        if refusal is not None:
            raise refusal
        for k, m in nets.items():
            m.load_state_dict(state["nets"][k])
        for k, e in emas.items():
            e.load_state_dict(state["ema"][k])
        for k, o in optims.items():
            o.load_state_dict(state["optims"][k])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        stream.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        if dist.parallel and device.type == "cuda" and "device_rng" in state:
            torch.cuda.set_rng_state(state["device_rng"])  # rank 0's device's, same as ours
        saved_window = state.get("log_window")  # absent in checkpoints of older versions
        if main:
            truncate_stats(stats_path, start)
        log.info("resumed from %s (step %d)", path.name, start)
    elif main:
        stats_path.unlink(missing_ok=True)
    log.info("training %s on %s for %d steps on %s", family.name, params.data.path, t.steps, device)

    def checkpoint(step: int) -> None:
        if dist.parallel:
            # Every rank's window becomes the ranks' mean, so the state rank 0 saves is every
            # rank's, and a resumed run logs what an uninterrupted one logs (same operations).
            for k, v in mean_over_ranks(acc, dist.world).items():
                acc[k] = v.to(device)
        if not main:
            return
        state = {
            "step": step,
            "family": family.name,
            "config": params.to_dict(),
            "nets": {k: m.state_dict() for k, m in nets.items()},
            "ema": {k: e.state_dict() for k, e in emas.items()},
            "optims": {k: o.state_dict() for k, o in optims.items()},
            "scaler": scaler.state_dict() if scaler is not None else None,
            "data": stream.state_dict(),
            "rng": rng_state(),
            # The losses summed since the last logged step: a resumed run logs the same means.
            "log_window": {"acc": dict(acc), "counts": dict(counts)},
            "world_size": dist.world,
        }
        if dist.parallel and device.type == "cuda":  # rank 0's own GPU's generator
            state["device_rng"] = torch.cuda.get_rng_state(device)
        save_checkpoint(run_dir, step, state, t.keep_checkpoints)

    ema_nets = {**nets, **{k: e.shadow for k, e in emas.items()}}
    fixed_seed = t.seed + 1  # sample grids use their own generator: training RNG is untouched

    grid_inputs = None
    if family.sample_inputs is not None:
        # Image-to-image families: the same real training inputs in every grid, each shown
        # beside its output, so that grids over time show what the generator does to them.
        grid_inputs = family.sample_inputs(params, spec, data, 32, fixed_seed)  # (32, C, h, w)

    def grid(step: int) -> None:
        if grid_inputs is None:
            images, _ = generate_images(family, ema_nets, params, spec, 64, fixed_seed)
        else:
            outputs = generate_from_latents(family, ema_nets, grid_inputs)  # (32, C, H, W)
            images = interleave_pairs(grid_inputs, outputs)  # (64, C, H, W)
        save_grid_png(images, run_dir / "samples" / f"step_{step:08d}.png", nrow=8)

    groups = {n: names for n, names in family.optim_groups.items()}
    bar = _progress(t.progress and main, start, t.steps, params.name or family.name)
    acc: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    if saved_window:
        acc.update(saved_window["acc"])
        counts.update(saved_window["counts"])
    window_start, window_steps = time.perf_counter(), 0
    began, last_losses, last_rate = time.perf_counter(), {}, None
    step = start
    stop.armed = True  # from here a first Ctrl-C ends training at a step boundary
    try:
        for step in range(start, t.steps):
            ctx = StepContext(step, params, spec, device, t.batch_size // dist.world)
            if augment is not None:
                augment.reseed(step)
            for phase in phases:
                if step % phase.every:
                    continue
                opt = optims[phase.optimizer]
                trainable = set(groups[phase.optimizer])
                for name, m in nets.items():  # no weight grads for the networks not stepped
                    m.requires_grad_(name in trainable)
                for _ in range(phase.repeats):
                    batch = stream.next() if phase.needs_batch else None
                    opt.zero_grad(set_to_none=True)
                    with autocast(device, profile.amp):
                        out = phase.loss(loss_nets, batch, ctx)
                    loss = out["loss"]
                    if scaler is not None:
                        scaler.scale(loss).backward()
                    else:
                        loss.backward()
                    if dist.parallel:  # the mean over ranks: the global batch's gradient
                        weights = [p for g in opt.param_groups for p in g["params"]]
                        average_gradients(weights, dist.world)
                    if scaler is not None:
                        scaler.step(opt)
                        scaler.update()
                    else:
                        opt.step()
                    if phase.after is not None:
                        phase.after(nets)
                    for k, v in out.items():
                        key = f"{phase.name}/loss" if k == "loss" else k
                        acc[key] = acc.get(key, 0.0) + v.detach().float()
                        counts[key] = counts.get(key, 0) + 1
            for e in emas.values():
                e.update(step - t.ema_start if step >= t.ema_start else None)
            done = step + 1
            window_steps += 1
            losses: dict[str, float] = {}
            rate = None
            if done % t.log_every == 0 or done == t.steps:
                now = time.perf_counter()
                rate = window_steps * t.batch_size / max(now - window_start, 1e-9)
                if dist.parallel:  # each rank's means are over its shard: average them
                    acc.update(
                        {k: v.to(device) for k, v in mean_over_ranks(acc, dist.world).items()}
                    )
                losses = {k: (v / counts[k]).item() for k, v in acc.items()}
                acc.clear()
                counts.clear()
                bad = [k for k, v in losses.items() if not torch.isfinite(torch.tensor(v))]
                if bad:
                    raise TrainingDiverged(
                        f"training diverged at step {done}: {', '.join(bad)} not finite; "
                        f"try a lower train.lr or another loss.type (run: {run_dir})"
                    )
                last_losses, last_rate = losses, rate
            if main and t.sample_every and done % t.sample_every == 0 and done != t.steps:
                grid(done)
            info = StepInfo(
                done, t.steps, losses, nets, ema_nets, run_dir, rate, family, params, spec
            )
            if callbacks:
                cb_began = time.perf_counter()
                for cb in callbacks:
                    cb(info)
                window_start += time.perf_counter() - cb_began  # evaluation is not training time
            if main and (losses or info.metrics):
                record = {"step": done, "time": round(time.perf_counter() - began, 3)}
                if rate is not None:
                    record["images_per_s"] = rate
                record.update(losses)
                record.update(info.metrics)
                with open(stats_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if losses:
                bar.set_postfix(
                    {k.split("/")[0]: f"{v:.3f}" for k, v in losses.items() if k.endswith("/loss")}
                    | {"img/s": f"{rate:.0f}"},
                    refresh=False,
                )
                window_start, window_steps = time.perf_counter(), 0
            bar.update(1)
            if done % t.checkpoint_every == 0 or done == t.steps:
                checkpoint(done)
            if dist.parallel:  # a Ctrl-C seen by one rank stops all at the same step
                stop.requested = dist.any(stop.requested)
            if stop.requested and done < t.steps:
                # Every piece of state is at the end of step ``done``: checkpoint it there.
                if done % t.checkpoint_every:
                    checkpoint(done)
                message = (
                    f"training interrupted after step {done} of {t.steps}; checkpoint "
                    f"{checkpoint_path(run_dir, done).name} written, continue with --resume"
                )
                log.info(message)
                raise TrainingInterrupted(message, done)
    except KeyboardInterrupt:
        # A second Ctrl-C, or one outside the main thread's handler: the step in flight may be
        # half done, so no checkpoint is written from it; the last one on disk stays valid.
        last = latest_checkpoint(run_dir)
        where = f"checkpoint step {last[0]}" if last else "no checkpoint yet"
        log.info("interrupted during step %d; resume with --resume (%s)", step + 1, where)
        raise
    finally:
        stream.close()
        bar.close()

    stop.finishing = True
    seconds = time.perf_counter() - began
    result = TrainResult(
        run_dir, t.steps, seconds, last_rate, last_losses, resume_from and resume_from[0]
    )
    if not main:
        return result
    grid(t.steps)
    from safetensors.torch import save_file

    weights = {
        f"{name}.{k}": v.detach().cpu().contiguous()
        for name in family.ema_nets
        for k, v in ema_nets[name].state_dict().items()
    }
    with atomic_path(run_dir / "generator.safetensors") as tmp:
        # One metadata key: safetensors writes several in a per-process hash order, which made
        # the bytes (and DVC's hash) of identical weights differ from one run to the next.
        meta = {"ganops": json.dumps({"family": family.name, "ema": bool(emas)}, sort_keys=True)}
        save_file(weights, str(tmp), metadata=meta)
    summary = {
        "status": "completed",
        "family": family.name,
        "steps": t.steps,
        "seconds_this_session": round(seconds, 3),
        "images_per_s": last_rate,
        "final_losses": last_losses,
        "resumed_from": result.resumed_from,
        "params_digest": params.digest(),
        "determinism": determinism_lineage(),
    }
    write_curves(run_dir)
    write_json_atomic(run_dir / "run.json", summary)
    log.info("done: %d steps in %.1f s", t.steps, seconds)
    return result


def _progress(enabled: bool, start: int, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=start,
        desc=desc,
        unit="step",
        disable=not enabled,
        mininterval=1.0,
        dynamic_ncols=True,
        file=sys.stderr,
    )
