"""Step time of data-parallel ``ganops train`` on CPU: 2 ranks against 1 process, same global batch.

Trains DCGAN (or ``--family stylegan``, whose minibatch stddev gathers the global batch) on
generated colour images with the exact profile (one intra-op thread per process), each time the
``ganops train`` a user runs, in fresh child processes:

- ``1 process``: the reference, the whole global batch in one process;
- ``2 ranks``: ``--nproc-per-node 2`` (torchrun, gloo), each rank half of the batch.

Two figures per configuration, both over the steady state (the first logged window, with
start-up, is left out):

- wall seconds per step, from ``stats.jsonl`` (images/s per logged window, median): the
  speed-up a user sees, which on a machine shared with other work depends on how many cores
  are free at the time;
- CPU seconds per step of all its processes together (launcher and ranks): the CPU times of the
  process tree read when the first window is logged and when the last one is, over the steps
  between. What data parallelism costs in work (the all_reduces, the global batch norm,
  smaller kernels), which other users' load changes less.

The configurations alternate for ``--rounds`` rounds and each round reports its ratios against
the 1-process reference of the same round. Run from the repository root::

    PYTHONPATH=. .venv/bin/python scripts/bench_ddp.py
    PYTHONPATH=. .venv/bin/python scripts/bench_ddp.py --size 64 --batch 64 --steps 40 --log-every 5 --rounds 1
    PYTHONPATH=. .venv/bin/python scripts/bench_ddp.py --family stylegan --batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]


def write_data(path: Path, n: int, size: int) -> None:
    from gan_models.data.format import write_imageset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    write_imageset(path, {"images": images}, meta={"name": "bench", "source": "bench_ddp"})


def write_params(
    path: Path, family: str, data: Path, size: int, batch: int, steps: int, log_every: int
) -> None:
    params = {
        "model": {"family": family, "width": 32, "latent_dim": 64},
        "data": {"path": str(data), "image_size": size},
        "train": {
            "steps": steps,
            "batch_size": batch,
            "log_every": log_every,
            "checkpoint_every": steps,
            "sample_every": 0,
            "progress": False,
        },
    }
    path.write_text(yaml.safe_dump(params))


def tree_cpu(pid: int) -> float:
    """CPU seconds so far of ``pid`` and its descendants."""
    total = 0.0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return total
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run(params: Path, run_dir: Path, steps: int, log_every: int, *extra: str) -> float:
    """Run ``ganops train``; the CPU seconds per step of its process tree between the first
    and the last logged window."""
    cmd = [sys.executable, "-m", "gan_models.cli", "train", str(params)]
    cmd += ["--run-dir", str(run_dir), "--no-track", *extra]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stats, marks = run_dir / "stats.jsonl", {}
    first, last = log_every, steps - log_every  # the windows between: steady state
    while p.poll() is None:
        done = len(stats.read_text().splitlines()) * log_every if stats.exists() else 0
        for mark in (first, last):
            if done >= mark and mark not in marks:
                marks[mark] = (done, tree_cpu(p.pid))
        time.sleep(0.02)
    _, err = p.communicate()
    if p.returncode:
        raise SystemExit(f"ganops train failed ({p.returncode}):\n{err.decode()[-2000:]}")
    (s0, c0), (s1, c1) = marks[first], marks[last]
    return (c1 - c0) / (s1 - s0)


def step_seconds(run_dir: Path, batch: int) -> float:
    """Median wall seconds per step over the logged windows after the first."""
    rows = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r][1:]
    return statistics.median(batch / r for r in rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=("dcgan", "stylegan"), default="dcgan")
    ap.add_argument("--size", type=int, default=32, help="image side (power of two)")
    ap.add_argument("--batch", type=int, default=64, help="global batch")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()

    configs = {"one_process": [], "two_ranks": ["--nproc-per-node", "2"]}
    if a.steps < 3 * a.log_every:
        raise SystemExit("--steps: at least 3 logged windows (3 x --log-every)")
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        root = Path(tmp)
        write_data(root / "data", 4 * a.batch, a.size)
        params = root / "params.yaml"
        write_params(params, a.family, root / "data", a.size, a.batch, a.steps, a.log_every)
        rounds = []
        for r in range(a.rounds):
            row = {}
            for name, extra in configs.items():
                run_dir = root / f"{name}-{r}"
                cpu = run(params, run_dir, a.steps, a.log_every, *extra)
                row[name] = {
                    "wall_s_per_step": step_seconds(run_dir, a.batch),
                    "cpu_s_per_step": cpu,
                }
            rounds.append(row)
            one, two = row["one_process"], row["two_ranks"]
            print(
                f"round {r + 1}: wall {one['wall_s_per_step'] * 1000:.0f} -> "
                f"{two['wall_s_per_step'] * 1000:.0f} ms/step (speed-up "
                f"{one['wall_s_per_step'] / two['wall_s_per_step']:.2f}x); CPU "
                f"{one['cpu_s_per_step'] * 1000:.0f} -> {two['cpu_s_per_step'] * 1000:.0f} "
                f"ms/step (x{two['cpu_s_per_step'] / one['cpu_s_per_step']:.2f})"
            )
    result = {
        "config": {"family": a.family, "width": 32, "size": a.size, "batch": a.batch,
                   "steps": a.steps, "threads_per_process": 1,
                   "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
        "rounds": rounds,
    }  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
