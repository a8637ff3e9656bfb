"""GPU benchmark: images/s, peak memory and model FLOPs utilisation of the trainer.

DCGAN-64 and StyleGAN (64x64 colour, batch 256) under the exact and the fast profile, each
trained by ``gan_models.training.train`` on synthetic uint8 data held in memory. FLOPs per step
come from ``torch.utils.flop_counter.FlopCounterMode`` over one pass of the family's loss phases
(forward + backward, repeats and lazy intervals counted as the trainer runs them); MFU is
achieved FLOP/s over the device's dense bf16 peak (:data:`PEAK_BF16`, matched by device name),
for both profiles. Writes ``bench_gpu.json`` and ``bench_gpu.md`` to ``--out``. Needs only
torch, numpy, pydantic, pyyaml, safetensors, pillow and tqdm (no tracking or orchestration
packages); run from the repository root::

    PYTHONPATH=. python3 scripts/bench_gpu.py --out OUT_DIR          # a GPU, under 5 minutes
    PYTHONPATH=. python3 scripts/bench_gpu.py --out /tmp/b --device cpu --steps 2 --batch 4
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

# Dense (no sparsity) bf16 tensor FLOP/s by device name, from the vendors' data sheets.
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is 756e12
    "H800": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,  # fp16 tensor cores (no bf16)
    "T4": 65e12,  # fp16 tensor cores (no bf16)
}

MODELS = {
    # name: (family, model keys, loss keys)
    "dcgan-64": ("dcgan", {"width": 64, "latent_dim": 100}, {}),
    "stylegan-64": (
        "stylegan",
        {"width": 64, "latent_dim": 512, "mapping_layers": 8},
        {"r1_gamma": 1.0, "r1_every": 16, "style_mixing": 0.9},
    ),
}


def peak_flops(device_name: str) -> float | None:
    """The bf16 peak of the longest table name found in ``device_name``, or None."""
    hits = [k for k in PEAK_BF16 if k.lower() in device_name.lower()]
    if not hits:
        return None
    if "H100" in hits and "PCIe" in device_name:
        return 756e12
    return PEAK_BF16[max(hits, key=len)]


def _params(model: str, profile: str, batch: int, device: str, steps: int, width: int | None):
    from gan_models.config import TrainParams

    family, m, loss = MODELS[model]
    m = {**m, "width": width or m["width"]}
    return TrainParams(
        name=f"bench-{model}-{profile}",
        model={"family": family, **m},
        loss=loss,
        data={"image_size": 64, "cache_mb": 0, "prefetch": 2},
        train={
            "steps": steps,
            "batch_size": batch,
            "device": device,
            "profile": profile,
            "progress": False,
            "checkpoint_every": 10**9,
            "log_every": 10**9,
            "ema_decay": 0.999,
        },
    )


def _data(n: int):
    import numpy as np

    from gan_models.data.format import ImageSet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, 64, 64), dtype=np.uint8)
    return ImageSet({"images": images}, None, {"kind": "images"})


def _flop_counter_class():
    """FlopCounterMode's per-operator formulas without its module hooks, which refuse the
    ``autograd.grad`` of R1 penalties."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class FlopCount(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            count = flop_registry.get(func._overloadpacket)
            if count is not None:
                self.total += count(*args, **kwargs, out_val=out)
            return out

    return FlopCount


def _FlopCount():  # noqa: N802 (a class made on first use, so importing needs no torch)
    return _flop_counter_class()()


def flops_per_step(params, data) -> float:
    """FLOPs of one trainer step: every phase's loss forward and backward, once per repeat,
    weighted by 1/every for lazy regularisers."""
    from gan_models.families import get_family
    from gan_models.families.base import StepContext
    from gan_models.training.batches import BatchStream
    from gan_models.training.loop import _autocast, select_device
    from gan_models.training.profile import resolve_profile

    t = params.train
    device = select_device(t.device)
    prof = resolve_profile(t.profile, t.amp, device)
    family = get_family(params.model.family)
    stream = BatchStream(data, 64, t.batch_size, t.seed, device, prefetch=0)
    spec = stream.spec()
    nets = prof.prepare({k: m.to(device).train() for k, m in family.build(params, spec).items()})
    total = 0.0
    for phase in family.phases(params, spec):
        batch = stream.next() if phase.needs_batch else None
        ctx = StepContext(0, params, spec, device, t.batch_size)
        counter = _FlopCount()
        with counter:
            with _autocast(device, prof.amp):
                loss = phase.loss(nets, batch, ctx)["loss"]
            loss.backward()
        total += counter.total * phase.repeats / phase.every
    stream.close()
    return float(total)


def time_trainer(params, data, warmup: int, steps: int) -> tuple[float, int | None]:
    """Seconds of ``steps`` trainer steps after ``warmup``, and peak device memory (bytes)."""
    import torch

    from gan_models.training import train

    marks: dict[int, float] = {}
    cuda = params.train.device == "cuda"

    def clock(info) -> None:
        if info.step in (warmup, warmup + steps):
            if cuda:
                torch.cuda.synchronize()
            marks[info.step] = time.perf_counter()
            if info.step == warmup and cuda:
                torch.cuda.reset_peak_memory_stats()

    p = params.model_copy(deep=True)
    p.train.steps = warmup + steps
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        train(p, tmp, data=data, callbacks=[clock])
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return marks[warmup + steps] - marks[warmup], peak


def run(
    out: Path,
    device: str,
    batch: int,
    steps: int,
    warmup: int,
    models: list[str],
    width: int | None = None,
) -> dict:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: --device cuda but torch sees no CUDA device")
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    peak = peak_flops(name) if device == "cuda" else None
    data = _data(max(batch * 4, 64))
    rows = []
    for model in models:
        for profile in ("exact", "fast"):
            params = _params(model, profile, batch, device, steps, width)
            flops = flops_per_step(params, data)
            seconds, mem = time_trainer(params, data, warmup, steps)
            step_s = seconds / steps
            row = {
                "model": model,
                "profile": profile,
                "batch_size": batch,
                "steps_timed": steps,
                "images_per_s": round(batch / step_s, 1),
                "step_ms": round(1000 * step_s, 2),
                "peak_memory_gib": None if mem is None else round(mem / 2**30, 3),
                "flops_per_step": flops,
                "achieved_tflops": round(flops / step_s / 1e12, 2),
                "mfu": None if peak is None else round(flops / step_s / peak, 4),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "device": name,
        "peak_bf16_flops": peak,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Device: {name}; torch {torch.__version__}; peak bf16 "
        + (f"{peak / 1e12:.0f} TFLOP/s" if peak else "unknown (MFU not computed)"),
        "",
        "| model | profile | batch | images/s | step ms | peak memory GiB | GFLOP/step | "
        "TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        mem = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f}"
        lines.append(
            f"| {r['model']} | {r['profile']} | {r['batch_size']} | {r['images_per_s']:.0f} | "
            f"{r['step_ms']:.1f} | {mem} | {r['flops_per_step'] / 1e9:.1f} | "
            f"{r['achieved_tflops']:.1f} | {mfu} |"
        )
    (out / "bench_gpu.md").write_text("\n".join(lines) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for bench_gpu.json/.md")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (autotuning)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--width", type=int, default=None, help="override the widths (smoke runs)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    run(args.out, args.device, args.batch, args.steps, args.warmup, args.models, args.width)
    print(f"bench_gpu: done in {time.perf_counter() - t0:.0f} s; wrote {args.out}/bench_gpu.*")


if __name__ == "__main__":
    main()
