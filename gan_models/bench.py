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


def _time_trainer(params: TrainParams, data: ImageSet, warmup: int, steps: int) -> float:
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
        trainer_s.append(_time_trainer(params, data, warmup, steps))
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


def bench_eval(
    run_dir: str = "runs/demo",
    features_dir: str | None = None,
    n_samples: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Images/s of a whole evaluation (generate + extract + every metric) on ``n_samples``.

    The reference is the bare forward work in the same process: generating the samples and
    extracting their features, without any metric. The reference split's statistics are
    computed once before timing (they are cached on disk in normal use).
    """
    from gan_models.data.splits import dataset_name, load_split
    from gan_models.metrics.config import EvaluateParams, FeaturesParams
    from gan_models.metrics.evaluate import evaluate_generator
    from gan_models.metrics.extractors import extractor_for
    from gan_models.sampling import RunGenerator

    gen = RunGenerator.from_run_dir(run_dir)
    root = gen.params.data.path
    size = gen.spec.image_size
    train_split, test_split = load_split(root, "train", size), load_split(root, "test", size)
    extractor = extractor_for(FeaturesParams(), dataset_name(gen.params), features_dir)
    kwargs = EvaluateParams(n_samples=n_samples, seed=seed).evaluate_kwargs()
    kwargs.update(cas=False)

    def run() -> dict[str, Any]:
        return evaluate_generator(
            lambda n, s: gen.generate(n, s),
            extractor=extractor,
            real_train=train_split,
            real_test=test_split,
            **kwargs,
        )

    run()  # warm: reference statistics into the cache, allocator, threads
    t0 = time.perf_counter()
    result = run()
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    images, _ = gen.generate(n_samples, seed)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    extractor.features_and_logits(images)
    extract_s = time.perf_counter() - t0
    return {
        "benchmark": "eval",
        "run_dir": str(run_dir),
        "family": gen.family.name,
        "extractor": extractor.name,
        "n_samples": n_samples,
        "threads": torch.get_num_threads(),
        "seconds": round(full_s, 3),
        "generate_seconds": round(gen_s, 3),
        "extract_seconds": round(extract_s, 3),
        "images_per_s": round(n_samples / full_s, 1),
        "forward_only_images_per_s": round(n_samples / (gen_s + extract_s), 1),
        "ratio": round((gen_s + extract_s) / full_s, 4),
        "fid": round(result["fid"]["value"], 4),
    }


def write_synthetic_set(path: str, n: int, size: int = 64, channels: int = 3) -> None:
    """A dataset directory of ``n`` random uint8 colour images, written in chunks (flat memory)."""
    import json
    from pathlib import Path

    from gan_models.data.format import FORMAT_VERSION
    from gan_models.data.stream import NpyWriter

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    writer = NpyWriter(root / "images.npy", (n, channels, size, size), np.uint8)
    for start in range(0, n, 4096):
        rows = min(4096, n - start)
        writer.write(rng.integers(0, 256, (rows, channels, size, size), dtype=np.uint8))
    writer.close()
    meta = {
        "name": root.name, "source": "synthetic", "kind": "images",
        "format_version": FORMAT_VERSION, "arrays": {"images": [n, channels, size, size]},
        "sha256": {},
    }  # fmt: skip
    (root / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


_RSS_CHILD = """
import json, resource, sys, tempfile
from gan_models.training.params import TrainParams
from gan_models.training import train
p = TrainParams.model_validate(json.loads(sys.argv[1]))
with tempfile.TemporaryDirectory() as tmp:
    r = train(p, tmp)
print(json.dumps({"max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "images_per_s": r.images_per_s}))
"""


def _train_rss(params: TrainParams) -> dict[str, Any]:
    """Peak RSS (ru_maxrss) of a training run in a fresh child process."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, json.dumps(params.to_dict())],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_data(
    sizes: tuple[int, ...] = (10_000, 200_000),
    steps: int = 200,
    batch_size: int = 64,
    width: int = 16,
    workdir: str | None = None,
    processed: str | None = None,
    speed_steps: int = 100,
    rounds: int = 3,
) -> dict[str, Any]:
    """Peak memory of training on generated 64x64 colour sets of each size (streamed when over
    the default cache budget), and, on ``processed`` (a processed split such as
    data/processed/mnist5k/train), trainer images/s streaming from disk against the same data
    held in memory, in alternating rounds of one process."""
    import shutil
    from pathlib import Path

    from gan_models.data.format import read_imageset
    from gan_models.training.batches import auto_cache_bytes

    tmp = tempfile.mkdtemp(prefix="ganops-bench-data-", dir=workdir)
    result: dict[str, Any] = {"benchmark": "data", "steps": steps, "batch_size": batch_size}
    result["auto_cache_mb"] = round(auto_cache_bytes() / 2**20)
    try:
        rss = {}
        for n in sizes:
            path = Path(tmp) / f"set{n}"
            write_synthetic_set(str(path), n)
            params = TrainParams(
                model={"family": "dcgan", "width": width, "latent_dim": 100},
                data={"path": str(path), "image_size": 64},
                train={"steps": steps, "batch_size": batch_size, "progress": False,
                       "checkpoint_every": steps, "ema_decay": 0.999},
            )  # fmt: skip
            rss[n] = _train_rss(params)
            rss[n]["streamed"] = n * 3 * 64 * 64 > auto_cache_bytes()
            shutil.rmtree(path)
        result["rss"] = {str(n): r for n, r in rss.items()}
        result["rss_ratio"] = round(rss[sizes[-1]]["max_rss_kb"] / rss[sizes[0]]["max_rss_kb"], 4)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if processed:
        from gan_models.training.batches import load_training_set

        base = TrainParams(
            model={"family": "dcgan", "width": 32, "latent_dim": 64},
            data={"path": processed, "image_size": 32},
            train={"batch_size": 64},
        )
        streamed = base.model_copy(deep=True)
        streamed.data.cache_mb = 0
        memory = read_imageset(processed)  # whole split in memory, as before streaming
        disk = load_training_set(processed)
        s_mem, s_disk = [], []
        for _ in range(rounds):
            s_mem.append(_time_trainer(base, memory, 3, speed_steps))
            s_disk.append(_time_trainer(streamed, disk, 3, speed_steps))
        result.update(
            processed=processed,
            memory_seconds=[round(s, 3) for s in s_mem],
            streamed_seconds=[round(s, 3) for s in s_disk],
            streamed_over_memory=round(sum(s_mem) / sum(s_disk), 4),
        )
    return result


def write_processed_set(root: str, n: int, n_test: int = 1000, size: int = 64) -> None:
    """A processed dataset: train (``n``) and test (``n_test``) splits of seeded uint8 colour
    images in 10 classes (a bar whose position and colour say the class), written in chunks."""
    from pathlib import Path

    from gan_models.data.format import FORMAT_VERSION, finish_imageset
    from gan_models.data.stream import NpyWriter

    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", n_test)):
        path = Path(root) / split
        path.mkdir(parents=True)
        labels = np.arange(count) % 10
        writer = NpyWriter(path / "images.npy", (count, 3, size, size), np.uint8)
        for start in range(0, count, 4096):
            y = labels[start : start + 4096]
            x = rng.integers(0, 96, (len(y), 3, size, size), dtype=np.uint8)
            for i, c in enumerate(y):
                x[i, c % 3, :, 6 * c : 6 * c + 4] = 240
            writer.write(x)
        writer.close()
        meta = {"name": f"bench/{split}", "source": "synthetic", "kind": "images",
                "format_version": FORMAT_VERSION, "num_classes": 10,
                "arrays": {"images": [count, 3, size, size]}}  # fmt: skip
        finish_imageset(path, meta, labels=labels)


_EVAL_DATA_CHILD = """
import json, resource, sys
from pathlib import Path
step, mode, root, out, steps = sys.argv[1:6]
from gan_models.data.splits import load_split, open_split
from gan_models.metrics.domain_classifier import load_domain_classifier, train_domain_classifier
from gan_models.metrics.reference import reference_stats
split = open_split if mode == "stream" else load_split
if step == "features":
    card = train_domain_classifier(
        split(root, "train"), split(root, "test"), Path(out) / "classifier",
        batch_size=64, width=8, hidden=64, max_steps=int(steps),
    )
    r = {"sha256": card["sha256"], "test_accuracy": card["test_accuracy"]}
else:
    ext = load_domain_classifier(Path(out) / "classifier", batch_size=256)
    ref = reference_stats(split(root, "train").images, ext, split="bench/train",
                          cache_dir=Path(out) / "cache")
    r = {"key": ref.key, "n": ref.n}
r["max_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(r))
"""


def _eval_data_child(step: str, mode: str, root: str, out: str, steps: int) -> dict[str, Any]:
    """One step of :func:`bench_eval_data` in a fresh child process: its peak RSS and seconds."""
    import json
    import subprocess
    import sys

    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _EVAL_DATA_CHILD, step, mode, root, out, str(steps)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"bench eval-data: {step} ({mode}) failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"peak_rss_mb": round(r.pop("max_rss_kb") / 1024, 1),
            "seconds": round(time.perf_counter() - t0, 1), **r}  # fmt: skip


def bench_eval_data(
    sizes: tuple[int, ...] = (10_000, 100_000),
    steps: int = 200,
    in_memory: bool = False,
    workdir: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Peak RSS of the features stage and of reference statistics on generated processed 64x64
    colour sets of each size, each in a fresh child process.

    ``features``: the domain classifier's training on the splits opened as ``train_features``
    opens them (the train split's content hash, ``steps`` seeded batches gathered from the file
    (the stage runs whole epochs; memory does not grow with steps), the test split's accuracy);
    ``reference``: ``reference_stats`` of the whole train split with that classifier. With
    ``in_memory`` both also run on the splits loaded whole in float32 (``load_split``), as
    before streaming. ``*_ratio``: peak RSS at the largest size over that at the smallest.
    """
    import shutil
    from pathlib import Path

    modes = ("stream", "memory") if in_memory else ("stream",)
    sizes = tuple(sorted(sizes))
    result: dict[str, Any] = {"benchmark": "eval-data", "classifier_steps": steps, "sizes": {}}
    tmp = Path(tempfile.mkdtemp(prefix="ganops-bench-eval-data-", dir=workdir))
    try:
        for n in sizes:
            root = tmp / f"set{n}"
            write_processed_set(str(root), n)
            entry: dict[str, Any] = {"train_mb_uint8": round(n * 3 * 64 * 64 / 2**20, 1)}
            for mode in modes:
                out = tmp / f"out{n}-{mode}"
                for step in ("features", "reference"):
                    entry[f"{step}_{mode}"] = r = _eval_data_child(
                        step, mode, str(root), str(out), steps
                    )
                    if log is not None:
                        log(f"{n} images, {step} ({mode}): {r}")
                shutil.rmtree(out)
            result["sizes"][str(n)] = entry
            shutil.rmtree(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    small, large = result["sizes"][str(sizes[0])], result["sizes"][str(sizes[-1])]
    for step in ("features", "reference"):
        a, b = small[f"{step}_stream"]["peak_rss_mb"], large[f"{step}_stream"]["peak_rss_mb"]
        result[f"{step}_ratio"] = round(b / a, 4)
    return result
