"""Ctrl-C during `ganops train` checkpoints a completed step; `--resume` is then bit-exact.

A real `ganops train` process gets SIGINT at a random point of its training (seeded here, so a
failure reproduces: the delays are printed), is resumed with `--resume` to the end, and every
result is compared bit for bit with an uninterrupted run: weights, EMA, optimizer and RNG state,
the exported generator, every sample grid, the logged losses and freshly sampled images.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_models.config import dump_yaml
from gan_models.data.format import write_imageset
from gan_models.sampling import RunGenerator
from gan_models.training.params import TrainParams

GANOPS = str(Path(sys.executable).with_name("ganops"))
SEED = 20  # change it to try other interrupt points; the delays it gives are printed
REPEATS = 3
STEPS = 80
# One thread: the same kernels in every process, whatever else the machine runs.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def params_file(tmp_path_factory):
    """DCGAN with an R1 phase (three optimizer steps a step) on 48 labelled 8x8 bars."""
    root = tmp_path_factory.mktemp("sigint")
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 3
    images = rng.integers(0, 60, (48, 1, 8, 8)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 0, :, 2 * y : 2 * y + 3] = 230
    data = root / "bars"
    write_imageset(data, {"images": images}, labels=labels, meta={"name": "bars", "source": "test"})
    params = TrainParams(
        model={"family": "dcgan", "width": 8, "latent_dim": 8},
        data={"path": str(data), "image_size": 8},
        loss={"r1_gamma": 0.1, "r1_every": 2},
        train={
            "steps": STEPS,
            "batch_size": 8,
            # Periodic checkpoints far apart and a logging window of 3 steps: an interrupt
            # lands between them, so its checkpoint has to carry a half-full logging window.
            "checkpoint_every": 25,
            "keep_checkpoints": 100,
            "log_every": 3,
            "sample_every": 20,
            "ema_decay": 0.9,
            "progress": False,
        },
    )
    path = root / "params.yaml"
    path.write_text(dump_yaml(params))
    return path


def train_cmd(params_file: Path, run_dir: Path, *extra: str) -> list[str]:
    return [GANOPS, "train", str(params_file), "--run-dir", str(run_dir), "--no-track", *extra]


@pytest.fixture(scope="module")
def reference(params_file):
    """An uninterrupted run, and how long its training loop took."""
    run = params_file.parent / "reference"
    proc = subprocess.run(
        train_cmd(params_file, run), env=ENV, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    seconds = json.loads((run / "run.json").read_text())["seconds_this_session"]
    return run, seconds


def interrupt(params_file: Path, run: Path, delay: float) -> subprocess.CompletedProcess:
    """Start training, send SIGINT ``delay`` s after its first logged step, wait for the end."""
    proc = subprocess.Popen(
        train_cmd(params_file, run),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (run / "stats.jsonl").exists():  # the SIGINT handler is in place by then
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def checkpoint(run: Path, step: int) -> dict:
    return torch.load(run / "checkpoints" / f"step_{step:08d}.pt", weights_only=False)


def assert_identical(a, b, where: str) -> None:
    """Nested checkpoint contents equal bit for bit (tensors, arrays, numbers, strings)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def losses(run: Path) -> list[dict]:
    records = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k == "step" or "/" in k} for r in records]


def test_sigint_at_random_points_then_resume_is_bit_exact(params_file, reference):
    ref, ref_seconds = reference
    ref_final = checkpoint(ref, STEPS)
    ref_images, _ = RunGenerator.from_run_dir(ref).generate(16, seed=5)
    rng = random.Random(SEED)
    seen_steps = []
    for rep in range(REPEATS):
        delay = rng.uniform(0.0, 0.8) * ref_seconds
        for attempt in range(4):  # a machine faster than the reference's may finish first
            run = params_file.parent / f"interrupted-{rep}-{attempt}"
            print(
                f"SIGINT repetition {rep}: {delay:.3f} s after the first logged step (seed {SEED})"
            )
            got = interrupt(params_file, run, delay)
            if not (run / "run.json").exists():
                break
            delay /= 2  # the signal came once training was complete: try earlier
        assert got.returncode == 130, got.stderr
        last_line = got.stderr.strip().splitlines()[-1]
        assert last_line.startswith("error: training interrupted after step "), got.stderr
        assert "Traceback" not in got.stderr, got.stderr
        step = int(last_line.split("after step ")[1].split()[0])
        assert 0 < step < STEPS
        assert not (run / "run.json").exists()
        saved = checkpoint(run, step)  # the interrupt's checkpoint is of the step it names
        assert saved["step"] == step
        if step % 3:  # the logging window of the interrupted step travels with it
            assert sum(saved["log_window"]["counts"].values()) > 0
        seen_steps.append(step)

        done = subprocess.run(
            train_cmd(params_file, run, "--resume"),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        assert f"resumed from step_{step:08d}.pt" in (run / "log.txt").read_text()

        final = checkpoint(run, STEPS)
        # Training draws only from torch's RNG; numpy's and Python's are saved as each process
        # started them (unseeded), so they are compared on their own: torch's must match.
        for state in (final, ref_final):
            state["rng"] = {"torch": state["rng"]["torch"]}
        assert_identical(final, ref_final, f"step {STEPS} checkpoint")
        assert (run / "generator.safetensors").read_bytes() == (
            ref / "generator.safetensors"
        ).read_bytes()
        grids = sorted(p.name for p in (ref / "samples").iterdir())
        assert grids == sorted(p.name for p in (run / "samples").iterdir())
        for name in grids:
            assert (run / "samples" / name).read_bytes() == (ref / "samples" / name).read_bytes()
        assert losses(run) == losses(ref)
        images, _ = RunGenerator.from_run_dir(run).generate(16, seed=5)
        assert torch.equal(images, ref_images)
    print(f"interrupted after steps {seen_steps}")
