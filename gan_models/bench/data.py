"""Training on data larger than memory: peak RSS against the set's size, streamed against
in-memory speed."""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from gan_models.bench.train import time_trainer
from gan_models.training.params import TrainParams


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
            s_mem.append(time_trainer(base, memory, 3, speed_steps))
            s_disk.append(time_trainer(streamed, disk, 3, speed_steps))
        result.update(
            processed=processed,
            memory_seconds=[round(s, 3) for s in s_mem],
            streamed_seconds=[round(s, 3) for s in s_disk],
            streamed_over_memory=round(sum(s_mem) / sum(s_disk), 4),
        )
    return result
