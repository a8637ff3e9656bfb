"""Every family trains on tiny 8x8 images on CPU, checkpoints, and resumes bit for bit."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from bars import write_tiny_bars

from gan_models.data.format import write_imageset
from gan_models.errors import ConfigError, GanopsError
from gan_models.families import FAMILIES
from gan_models.sampling import RunGenerator
from gan_models.training import StepInfo, TrainingDiverged, train
from gan_models.training.params import TrainParams
from gan_models.training.stop import TrainingInterrupted

# The image families; the translation, super-resolution and style families are in test_zoo.py.
FAMILY_NAMES = ["cgan", "dcgan", "vanilla", "wgan", "wgan-gp"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """48 labelled 8x8 grey images in the on-disk format: 3 classes of noisy bars."""
    return write_tiny_bars(tmp_path_factory.mktemp("data") / "bars")


def tiny_params(family: str, data_path, **train) -> TrainParams:
    t = {"steps": 2, "batch_size": 8, "checkpoint_every": 1, "log_every": 1, "progress": False}
    t.update(train)
    model = {"width": 8, "latent_dim": 8, "depth": 2, "embed_dim": 4}
    reads = FAMILIES[family].reads  # a key the family does not read is refused
    return TrainParams(
        model={"family": family, **{k: v for k, v in model.items() if f"model.{k}" in reads}},
        data={"path": str(data_path), "image_size": 8},
        loss={"r1_gamma": 0.1, "r1_every": 2} if family == "dcgan" else {},
        train=t,
    )


def read_stats(run_dir):
    return [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]


def weights(run_dir, step):
    state = torch.load(run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=False)
    return state


def assert_same_state(a, b):
    for table in ("nets", "ema"):
        assert a[table].keys() == b[table].keys()
        for net in a[table]:
            for k, v in a[table][net].items():
                assert torch.equal(v, b[table][net][k]), f"{table}.{net}.{k} differs"
    assert a["data"] == b["data"]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_trains_two_steps(family, tiny_data, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_params(family, tiny_data), run)
    assert result.steps == 2
    stats = read_stats(run)
    assert [s["step"] for s in stats] == [1, 2]
    for s in stats:
        losses = {k: v for k, v in s.items() if "/" in k}
        assert "D/loss" in losses and "G/loss" in losses
        assert all(np.isfinite(v) for v in losses.values())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_00000001.pt",
        "step_00000002.pt",
    ]
    for name in ("config.yaml", "spec.json", "log.txt", "run.json", "generator.safetensors"):
        assert (run / name).is_file(), name
    assert (run / "samples" / "step_00000002.png").is_file()
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    gen = RunGenerator.from_run_dir(run)
    images, labels = gen.generate(5, seed=3)
    assert images.shape == (5, 1, 8, 8) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert (labels is not None) == FAMILIES[family].conditional
    again, _ = gen.generate(5, seed=3)
    assert torch.equal(images, again)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_resume_equals_uninterrupted(family, tiny_data, tmp_path):
    """Stop after step 3 (checkpoint at 2), resume: same weights, EMA, data order and stats."""
    params = tiny_params(family, tiny_data, steps=5, checkpoint_every=2)
    train(params, tmp_path / "a")

    def crash_at_3(info: StepInfo) -> None:
        if info.step == 3:
            raise RuntimeError("simulated crash between checkpoints")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(params, tmp_path / "b", callbacks=[crash_at_3])
    assert (tmp_path / "b" / "checkpoints" / "step_00000002.pt").exists()
    resumed = train(params, tmp_path / "b", resume=True)
    assert resumed.resumed_from == 2
    assert_same_state(weights(tmp_path / "a", 5), weights(tmp_path / "b", 5))
    sa, sb = read_stats(tmp_path / "a"), read_stats(tmp_path / "b")
    assert [s["step"] for s in sb] == [1, 2, 3, 4, 5]
    assert [{k: v for k, v in s.items() if "/" in k} for s in sa] == [
        {k: v for k, v in s.items() if "/" in k} for s in sb
    ]


def test_sigkill_between_checkpoints_then_cli_resume(tiny_data, tmp_path):
    """A process killed with SIGKILL mid-run resumes through the CLI to identical weights."""
    params = tiny_params("dcgan", tiny_data, steps=6, checkpoint_every=2)
    params_file = tmp_path / "p.yaml"
    from gan_models.config import dump_yaml

    params_file.write_text(dump_yaml(params))
    train(params, tmp_path / "ref")
    script = textwrap.dedent(
        f"""
        import os, signal
        from gan_models.training import train
        def kill_at_5(info):
            if info.step == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        train({str(params_file)!r}, {str(tmp_path / "killed")!r}, callbacks=[kill_at_5])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "run.json").exists()
    cli = [sys.executable, "-m", "gan_models.cli", "train", str(params_file)]
    done = subprocess.run(
        cli + ["--run-dir", str(tmp_path / "killed"), "--resume", "--no-track"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    assert done.returncode == 0, done.stderr
    assert_same_state(weights(tmp_path / "ref", 6), weights(tmp_path / "killed", 6))


def test_sigint_in_process_checkpoints_the_completed_step(tiny_data, tmp_path):
    """SIGINT raised while step 3's callbacks run: step 3 completes and is checkpointed (between
    the periodic ones), train() raises TrainingInterrupted, the caller's SIGINT handler is back,
    and resuming gives the uninterrupted run's state."""
    params = tiny_params("wgan", tiny_data, steps=6, checkpoint_every=4, log_every=2)
    train(params, tmp_path / "ref")

    def interrupt_at_3(info: StepInfo) -> None:
        if info.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="after step 3 of 6") as stopped:
        train(params, tmp_path / "run", callbacks=[interrupt_at_3])
    assert stopped.value.step == 3 and stopped.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is before
    saved = weights(tmp_path / "run", 3)
    assert saved["step"] == 3 and saved["log_window"]["counts"]  # step 3's losses, not logged yet
    assert train(params, tmp_path / "run", resume=True).resumed_from == 3
    assert_same_state(weights(tmp_path / "ref", 6), weights(tmp_path / "run", 6))

    def logged(run):  # timings aside, the records of one uninterrupted run
        return [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in run]

    assert logged(read_stats(tmp_path / "run")) == logged(read_stats(tmp_path / "ref"))


def test_existing_run_needs_resume(tiny_data, tmp_path):
    train(tiny_params("dcgan", tiny_data), tmp_path / "r")
    with pytest.raises(GanopsError, match="--resume"):
        train(tiny_params("dcgan", tiny_data), tmp_path / "r")


def test_resume_with_other_params_names_keys(tiny_data, tmp_path):
    train(tiny_params("dcgan", tiny_data), tmp_path / "r")
    other = tiny_params("dcgan", tiny_data, lr=1e-3, steps=3)
    with pytest.raises(ConfigError, match=r"train\.lr"):
        train(other, tmp_path / "r", resume=True)
    # steps may grow: the run continues from its last checkpoint
    longer = tiny_params("dcgan", tiny_data, steps=3)
    assert train(longer, tmp_path / "r", resume=True).resumed_from == 2


def test_cgan_needs_labels(tmp_path):
    images = np.zeros((16, 1, 8, 8), np.uint8)
    write_imageset(tmp_path / "nolabels", {"images": images}, meta={"name": "x"})
    with pytest.raises(ConfigError, match="needs labels"):
        train(tiny_params("cgan", tmp_path / "nolabels"), tmp_path / "r")


def test_dcgan_rejects_non_power_of_two(tiny_data, tmp_path):
    p = tiny_params("dcgan", tiny_data)
    p.data.image_size = 12
    with pytest.raises(ConfigError, match="power of two"):
        train(p, tmp_path / "r")


def test_divergence_is_reported(tiny_data, tmp_path):
    p = tiny_params("vanilla", tiny_data, lr=1e30, steps=3)
    with pytest.raises(TrainingDiverged, match="not finite"):
        train(p, tmp_path / "r")


def test_batch_larger_than_dataset(tiny_data, tmp_path):
    with pytest.raises(GanopsError, match="batch_size"):
        train(tiny_params("dcgan", tiny_data, batch_size=100), tmp_path / "r")


def test_bf16_autocast_on_cpu_gives_finite_losses(tiny_data, tmp_path):
    train(tiny_params("wgan-gp", tiny_data, amp="bf16"), tmp_path / "r")
    for s in read_stats(tmp_path / "r"):
        assert all(np.isfinite(v) for k, v in s.items() if "/" in k)


def test_ema_warmup_closed_form():
    from torch import nn

    from gan_models.training.ema import EMA

    net = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.999)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(0)  # decay min(0.999, 1/10) = 0.1 -> 0.9 of the way
    assert ema.shadow.weight.item() == pytest.approx(0.9)
    assert ema.decay_at(10**6) == 0.999
    ema.update(None)  # before ema_start: a plain copy
    assert ema.shadow.weight.item() == 1.0


def test_callback_metrics_land_in_stats(tiny_data, tmp_path):
    """Callbacks see the EMA generator and may add metrics (e.g. FID) to the step's record."""
    seen = []

    def fake_metric(info: StepInfo) -> None:
        seen.append(info.step)
        if info.step == 3:
            images, _ = info.generate(4, seed=0)
            assert images.shape == (4, 1, 8, 8)
            info.metrics["mean_pixel"] = float(images.mean())

    train(
        tiny_params("dcgan", tiny_data, steps=4, log_every=2),
        tmp_path / "r",
        callbacks=[fake_metric],
    )
    stats = read_stats(tmp_path / "r")
    assert seen == [1, 2, 3, 4]
    assert [s["step"] for s in stats] == [2, 3, 4]
    assert "mean_pixel" in stats[1] and "D/loss" not in stats[1]
    assert "D/loss" in stats[0] and "mean_pixel" not in stats[0]


def test_auto_resume(tiny_data, tmp_path):
    """Pipelines resume an interrupted run, but retrain a finished one or one with new params."""
    params = tiny_params("dcgan", tiny_data, steps=4, checkpoint_every=2)
    run = tmp_path / "r"

    def crash_at_3(info: StepInfo) -> None:
        if info.step == 3:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        train(params, run, callbacks=[crash_at_3])
    assert train(params, run, resume="auto").resumed_from == 2
    finished = weights(run, 4)
    again = train(params, run, resume="auto")  # finished: trained again from scratch
    assert again.resumed_from is None
    assert_same_state(finished, weights(run, 4))  # ... to the same weights
    (run / "keep.txt").write_text("user file")
    changed = tiny_params("dcgan", tiny_data, steps=4, checkpoint_every=2, lr=1e-3)
    assert train(changed, run, resume="auto").resumed_from is None
    assert (run / "keep.txt").exists()
    header = (run / "curves" / "losses.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "step" and {"D/loss", "G/loss", "images_per_s"} <= set(header)
