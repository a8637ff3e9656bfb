"""The latent families on Twemoji at equal steps and at equal CPU time, and DiffAugment on/off.

    python scripts/bench_zoo_colour.py [--steps 500] [--budget 480] [--out reports/zoo-twemoji]

Needs `data/processed/twemoji` and the emoji domain classifier `models/features/twemoji`
(`dvc repro pipelines/emoji/dvc.yaml:features`). Every run is the family's small preset
(`params/FAMILY-twemoji-small.yaml`) trained by `ganops train` and scored by `ganops evaluate`,
the commands a user runs, one process at a time with one thread:

1. equal steps: every family trains ``--steps`` steps (its own batch size, as the preset says);
2. equal CPU time: each family's step count is ``--budget`` divided by its CPU seconds per step
   measured in (1), so that every training loop gets the same CPU time;
3. DiffAugment off: the families in ``--no-augment`` are trained again at their equal-time step
   count with ``train.augment=[]``, same seed, against the same run with it on from (2).

CPU time is the child processes' user + system time (getrusage), so other work on the machine
slows the wall clock but hardly the figures. Writes OUT/results.json (every run's numbers),
OUT/table.md and a 4 x 8 sample grid per run (OUT/grids/RUN.png, fixed seed, EMA generator).
A run folder that already holds metrics.json is reused, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

FAMILIES = ["dcgan", "wgan-gp", "stylegan", "cgan"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str]) -> float:
    """Run a command to completion; return its CPU seconds."""
    before = cpu_seconds()
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
    return cpu_seconds() - before


def train_and_score(name: str, family: str, steps: int, extra: list[str], root: Path) -> dict:
    run_dir = root / "runs" / name
    done = run_dir / "bench.json"
    if done.is_file():
        return json.loads(done.read_text())
    preset = f"params/{family}-twemoji-small.yaml"
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished earlier attempt
    cmd = ["ganops", "train", preset, "--no-track", "--run-dir", str(run_dir)]
    cmd += ["--set", f"train.steps={steps}", "--set", "train.progress=false"]
    for s in extra:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    train_cpu = run(cmd)
    train_wall = time.perf_counter() - t0
    summary = json.loads((run_dir / "run.json").read_text())
    eval_cpu = run(
        ["ganops", "evaluate", str(run_dir), "--features-dir", "models/features/twemoji"]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    from gan_models.metrics.report import summary_numbers
    from gan_models.training.params import load_run_config

    row = {
        "name": name,
        "family": family,
        "steps": steps,
        "batch_size": load_run_config(run_dir / "config.yaml").train.batch_size,
        "overrides": extra,
        "train_cpu_s": round(train_cpu, 1),
        "train_wall_s": round(train_wall, 1),
        "trainer_s": summary.get("seconds_this_session"),
        "cpu_s_per_step": round(train_cpu / steps, 4),
        "eval_cpu_s": round(eval_cpu, 1),
        **{k: round(float(v), 4) for k, v in summary_numbers(metrics).items()},
    }
    save_grid(run_dir, root / "grids" / f"{name}.png")
    done.write_text(json.dumps(row, indent=1))
    return row


def save_grid(run_dir: Path, out: Path) -> None:
    """32 samples of the EMA generator from fixed latents (seed 0), 8 per row, doubled in size."""
    from gan_models.sampling import RunGenerator
    from gan_models.utils.images import save_grid_png

    gen = RunGenerator.from_run_dir(run_dir)
    images, _ = gen.generate(32, seed=0)  # (32, C, H, W) in [-1, 1]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_grid_png(images, out, nrow=8, scale=2)


def table(rows: list[dict]) -> str:
    head = (
        "| run | steps x batch | CPU s (training) | FID [95% CI] | floor | precision / recall "
        "| CAS |\n|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        cas = f"{r['cas']:.3f}" if "cas" in r else "-"
        lines.append(
            f"| {r['name']} | {r['steps']:,} x {r['batch_size']} | {r['train_cpu_s']:.0f} "
            f"| {r['fid']:.1f} [{r['fid_ci_low']:.1f}, {r['fid_ci_high']:.1f}] "
            f"| {r['fid_floor']:.1f} | {r['precision']:.3f} / {r['recall']:.3f} | {cas} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500, help="steps for the equal-steps runs")
    ap.add_argument("--budget", type=float, default=480.0, help="CPU seconds per equal-time run")
    ap.add_argument("--no-augment", default="dcgan,cgan", help="families also run without it")
    ap.add_argument("--out", type=Path, default=Path("reports/zoo-twemoji"))
    a = ap.parse_args()
    rows = []
    for fam in FAMILIES:
        rows.append(train_and_score(f"{fam}-steps{a.steps}", fam, a.steps, [], a.out))
        print(json.dumps(rows[-1]), flush=True)
    per_step = {r["family"]: r["cpu_s_per_step"] for r in rows}
    equal_time = {}
    for fam in FAMILIES:
        steps = max(1, round(a.budget / per_step[fam]))
        equal_time[fam] = steps
        rows.append(train_and_score(f"{fam}-time{a.budget:.0f}s", fam, steps, [], a.out))
        print(json.dumps(rows[-1]), flush=True)
    for fam in [f for f in a.no_augment.split(",") if f]:
        name = f"{fam}-time{a.budget:.0f}s-noaug"
        rows.append(train_and_score(name, fam, equal_time[fam], ["train.augment=[]"], a.out))
        print(json.dumps(rows[-1]), flush=True)
    (a.out / "results.json").write_text(json.dumps(rows, indent=1))
    (a.out / "table.md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
