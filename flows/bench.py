"""Orchestration overhead: the pipeline flow's wall time against its stages' own time.

Builds a scratch checkout (a copy of the code, params, dvc.yaml and prefect.yaml in a fresh
git + DVC repository, so the real workspace is untouched), runs the ``pipeline`` flow on a
preset in this process (Prefect's temporary server included), and compares:

- ``wall_s``: the flow call, end to end;
- ``stages_s``: the sum of the stage commands' durations measured inside the tasks
  (``dvc repro --single-item STAGE``: DVC's up-to-date check plus the ``ganops`` command);
- ``overhead = wall_s / stages_s - 1``.

Then it runs the same flow again: every stage is up to date, so that run's wall time is the
fixed cost of a pipeline run (server, task bookkeeping, DVC checks)::

    python -m flows.bench --preset params/dcgan-mnist5k-small.yaml   # make bench-pipeline
    python -m flows.bench --tiny                                     # 8x8 digits, seconds

A bad preset is refused with one ``error: ...`` line and exit code 2, as ``ganops`` does,
before a scratch checkout or a Prefect server is made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gan_models.errors import GanopsError
from gan_models.services import STATE_DIR

SOURCE = Path(__file__).resolve().parents[1]
# What a scratch checkout needs: the code DVC hashes and runs, the params and both pipelines.
COPIED = ("gan_models", "flows", "params", "dvc.yaml", "prefect.yaml", "pyproject.toml",
          ".dvcignore", ".gitignore")  # fmt: skip
DVC_COPIED = (".dvc/config", ".dvc/plots")
# The pipeline on 8x8 digits in seconds per stage, for smoke tests (`--tiny`; source digits).
TINY = [
    "preprocess.image_size=8",
    "features.domain.epochs=2",
    "features.domain.width=8",
    "features.domain.hidden=32",
    "data.image_size=8",
    "model.width=8",
    "model.latent_dim=8",
    "train.steps=4",
    "train.batch_size=16",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.sample_every=0",
    "train.fid_every=2",
    "train.fid_samples=50",
    "evaluate.n_samples=100",
    "evaluate.fid_bootstrap=5",
    "evaluate.kid_subsets=5",
    "evaluate.kid_subset_size=50",
    "evaluate.memorization_samples=20",
]
GIT = ["git", "-c", "user.name=ganops", "-c", "user.email=ganops@localhost"]


def scratch_project(dest: str | Path, source: str | Path = SOURCE) -> Path:
    """A fresh git + DVC checkout at ``dest`` holding a copy of ``source``'s pipeline."""
    dest, source = Path(dest), Path(source)
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.is_file():
            shutil.copy(src, dest / name)
    env_bin = str(Path(sys.executable).parent)

    def run(*args: str) -> None:
        subprocess.run(args, cwd=dest, check=True, capture_output=True)

    run(*GIT, "init", "-q", "-b", "main")
    run(f"{env_bin}/dvc", "init", "-q")
    # The DVC config's tracked part and the plots page template it names (built by npm ci).
    for name in DVC_COPIED:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy(src, dest / name)
    with open(dest / ".gitignore", "a") as f:
        f.write(f"/{STATE_DIR}/\n")
    run(*GIT, "add", "-A")
    run(*GIT, "commit", "-qm", "scratch checkout")
    return dest


def bench_pipeline(
    preset: str | None = "params/dcgan-mnist5k-small.yaml",
    overrides: list[str] | None = None,
    workdir: str | Path | None = None,
    dataset: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Run the pipeline twice in a scratch checkout; wall time against stage time."""
    from flows.pipeline import pipeline

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ganops-bench-")
        workdir = tmp.name
    try:
        project = scratch_project(Path(workdir) / "proj")
        params = {
            "preset": Path(preset).stem if preset else None,  # the form's choice: the file stem
            "dataset": dataset, "source": source, "overrides": overrides or [],
            "project_dir": str(project),
        }  # fmt: skip
        began = time.perf_counter()
        first = pipeline(**params)
        wall = time.perf_counter() - began
        began = time.perf_counter()
        second = pipeline(**params)
        noop_wall = time.perf_counter() - began
    finally:
        if tmp is not None:
            tmp.cleanup()
    stages = sum(s["seconds"] for s in first["stages"])
    return {
        "preset": preset,
        "wall_s": round(wall, 2),
        "stages_s": round(stages, 2),
        "overhead": round(wall / stages - 1, 4),
        "per_stage_s": {s["stage"]: round(s["seconds"], 2) for s in first["stages"]},
        "noop_wall_s": round(noop_wall, 2),
        "noop_stages_s": round(sum(s["seconds"] for s in second["stages"]), 2),
        "noop_statuses": {s["stage"]: s["status"] for s in second["stages"]},
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.bench``: prints a summary line, then the result as JSON; the exit code."""
    ap = argparse.ArgumentParser(prog="python -m flows.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="params/dcgan-mnist5k-small.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="override on top of the preset (repeatable)")  # fmt: skip
    ap.add_argument("--workdir", default=None, help="keep the scratch checkout here")
    ap.add_argument("--tiny", action="store_true", help="8x8 digits, seconds per stage")
    args = ap.parse_args(argv)
    try:
        if args.tiny:
            r = bench_pipeline(None, [*TINY, *args.overrides], args.workdir, "digits", "digits")
        else:
            from gan_models.config import load_params
            from gan_models.training.params import TrainParams

            # refused here, before a scratch checkout and a Prefect server
            load_params(args.preset, TrainParams)
            r = bench_pipeline(args.preset, args.overrides, args.workdir)
    except GanopsError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(
        f"pipeline {r['wall_s']:.1f} s wall, stages {r['stages_s']:.1f} s: overhead "
        f"{100 * r['overhead']:.1f}% (ratio {r['wall_s'] / r['stages_s']:.3f}); "
        f"an up-to-date re-run takes {r['noop_wall_s']:.1f} s"
    )
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
