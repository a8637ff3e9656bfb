"""Streamed training data: the same batches as in memory, resumable with prefetching, clear
errors for damaged files."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from gan_models.config import dump_yaml
from gan_models.data.format import read_imageset, write_imageset
from gan_models.errors import DataError
from gan_models.training import StepInfo, train
from gan_models.training.batches import BatchStream, RowReader, load_training_set
from gan_models.training.params import TrainParams


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    """48 labelled 8x8 grey images of 3 classes (6 batches of 8 per epoch)."""
    rng = np.random.default_rng(1)
    labels = np.arange(48) % 3
    images = rng.integers(0, 60, (48, 1, 8, 8)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 0, :, 2 * y : 2 * y + 3] = 230
    path = tmp_path_factory.mktemp("stream") / "bars"
    write_imageset(path, {"images": images}, labels=labels, meta={"name": "bars", "source": "t"})
    return path


def params_for(path, **train) -> TrainParams:
    t = {"steps": 9, "batch_size": 8, "checkpoint_every": 3, "log_every": 1, "progress": False}
    t.update(train)
    return TrainParams(
        name="stream",
        model={"family": "dcgan", "width": 8, "latent_dim": 8},
        data={"path": str(path), "image_size": 8, "cache_mb": 0, "prefetch": 3},
        train=t,
    )


def batches(stream: BatchStream, n: int) -> list[dict]:
    return [stream.next() for _ in range(n)]


def test_streamed_batches_equal_in_memory_batches(bars):
    """Three epochs and a bit: streamed + prefetched batches equal in-memory ones, bit for bit."""
    cpu = torch.device("cpu")
    memory = BatchStream(read_imageset(bars), 8, 8, 5, cpu, prefetch=0)
    streamed = BatchStream(load_training_set(bars), 8, 8, 5, cpu, cache_bytes=0, prefetch=3)
    cached = BatchStream(load_training_set(bars), 8, 8, 5, cpu, cache_bytes=10**6, prefetch=2)
    assert streamed.streamed and not cached.streamed and not memory.streamed
    a, b, c = batches(memory, 20), batches(streamed, 20), batches(cached, 20)
    for x, y, z in zip(a, b, c, strict=True):
        assert x["image"].dtype == torch.float32 and x["image"].shape == (8, 1, 8, 8)
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["image"], z["image"])
        assert torch.equal(x["label"], y["label"])
    assert streamed.state_dict() == memory.state_dict() == {"epoch": {"all": 3}, "pos": {"all": 16}}
    # The position handed out is the state, not what the prefetcher read ahead: a new stream
    # loaded with it continues with the same batches.
    resumed = BatchStream(load_training_set(bars), 8, 8, 5, cpu, cache_bytes=0, prefetch=3)
    resumed.load_state_dict(streamed.state_dict())
    for x, y in zip(batches(memory, 7), batches(resumed, 7), strict=True):
        assert torch.equal(x["image"], y["image"])
    for s in (memory, streamed, cached, resumed):
        s.close()


def test_dataset_larger_than_the_budget_trains_like_in_memory(bars, tmp_path):
    """cache_mb far below the data's size: the run streams and ends with the weights of a run
    on the same data held in memory without prefetching."""
    streamed = params_for(bars, steps=4)
    assert streamed.data.cache_mb * 2**20 < (bars / "images.npy").stat().st_size
    train(streamed, tmp_path / "streamed")
    memory = params_for(bars, steps=4)
    memory.data.prefetch = 0
    train(memory, tmp_path / "memory", data=read_imageset(bars))
    a = torch.load(tmp_path / "streamed/checkpoints/step_00000004.pt", weights_only=False)
    b = torch.load(tmp_path / "memory/checkpoints/step_00000004.pt", weights_only=False)
    for net in a["nets"]:
        for k, v in a["nets"][net].items():
            assert torch.equal(v, b["nets"][net][k]), f"{net}.{k}"
    assert a["data"] == b["data"] == {"epoch": {"all": 0}, "pos": {"all": 32}}


@pytest.mark.parametrize("kill_at", [5, 7])
def test_sigkill_with_prefetching_resumes_bit_exact(bars, tmp_path, kill_at):
    """SIGKILL mid-run while the prefetcher reads ahead: resuming gives the uninterrupted run's
    weights. kill_at=7 resumes from step 6, the end of the first epoch (48 images / 8), when the
    prefetcher had already read batches of the second epoch."""
    params = params_for(bars)
    params_file = tmp_path / "p.yaml"
    params_file.write_text(dump_yaml(params))
    train(params, tmp_path / "ref")
    script = textwrap.dedent(
        f"""
        import os, signal
        from gan_models.training import train
        def kill(info):
            if info.step == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
        train({str(params_file)!r}, {str(tmp_path / "killed")!r}, callbacks=[kill])
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    last = sorted(p.name for p in (tmp_path / "killed/checkpoints").iterdir())[-1]
    assert last == f"step_{kill_at // 3 * 3:08d}.pt"
    state = torch.load(tmp_path / "killed/checkpoints" / last, weights_only=False)
    if kill_at == 7:
        assert state["data"] == {"epoch": {"all": 0}, "pos": {"all": 48}}
    result = train(params, tmp_path / "killed", resume=True)
    assert result.resumed_from == (3 if kill_at == 5 else 6)
    a = torch.load(tmp_path / "ref/checkpoints/step_00000009.pt", weights_only=False)
    b = torch.load(tmp_path / "killed/checkpoints/step_00000009.pt", weights_only=False)
    for table in ("nets", "ema"):
        for net in a[table]:
            for k, v in a[table][net].items():
                assert torch.equal(v, b[table][net][k]), f"{table}.{net}.{k}"
    assert a["data"] == b["data"] == {"epoch": {"all": 1}, "pos": {"all": 24}}


def test_truncated_array_names_the_file(bars, tmp_path):
    data = tmp_path / "cut"
    write_imageset(
        data, {"images": read_imageset(bars).images}, meta={"name": "cut", "source": "t"}
    )
    file = data / "images.npy"
    with open(file, "r+b") as f:
        f.truncate(file.stat().st_size - 100)
    with pytest.raises(DataError, match=r"images\.npy.*(damaged|truncated)"):
        train(params_for(data, steps=1), tmp_path / "run")


def test_damaged_header_names_the_file(bars, tmp_path):
    data = tmp_path / "bad"
    write_imageset(
        data, {"images": read_imageset(bars).images}, meta={"name": "bad", "source": "t"}
    )
    (data / "images.npy").write_bytes(b"not an npy file at all" * 10)
    with pytest.raises(DataError, match=r"bad/images\.npy: damaged"):
        load_training_set(data)


def test_file_cut_while_streaming_names_the_file(bars, tmp_path):
    """A file truncated after training opened it: the next batch raises a DataError naming it,
    from the prefetch thread into the training thread."""
    data = tmp_path / "later"
    write_imageset(data, {"images": read_imageset(bars).images}, meta={"name": "l", "source": "t"})
    stream = BatchStream(
        load_training_set(data), 8, 8, 0, torch.device("cpu"), cache_bytes=0, prefetch=2
    )
    assert isinstance(stream.sources["images"], RowReader)
    file = data / "images.npy"
    with open(file, "r+b") as f:
        f.truncate(200)
    with pytest.raises(DataError, match=r"later/images\.npy: short read"):
        batches(stream, 3)
    stream.close()


def test_float32_processed_data_of_older_versions_streams(tmp_path):
    """Processed sets written as float32 in [-1, 1] (format 1) are still read, streamed too."""
    rng = np.random.default_rng(0)
    x = (rng.random((16, 1, 8, 8), dtype=np.float32) * 2 - 1).astype(np.float32)
    write_imageset(tmp_path / "old", {"images": x}, meta={"name": "old", "source": "t"})
    stream = BatchStream(
        load_training_set(tmp_path / "old"), 8, 8, 0, torch.device("cpu"), cache_bytes=0
    )
    assert stream.streamed
    batch = stream.next()["image"]
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))[:8]
    assert torch.equal(batch, torch.from_numpy(x)[order])
    stream.close()


def test_progress_of_a_killed_step_is_not_counted(bars, tmp_path):
    """A callback that stops the run: the checkpoint's data position is that of the steps done,
    not of the batches the prefetcher read ahead."""

    def stop_at_2(info: StepInfo) -> None:
        if info.step == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        train(params_for(bars, checkpoint_every=1), tmp_path / "r", callbacks=[stop_at_2])
    state = torch.load(tmp_path / "r/checkpoints/step_00000001.pt", weights_only=False)
    assert state["data"] == {"epoch": {"all": 0}, "pos": {"all": 8}}


def test_array_files_import_through_the_folder_source(tmp_path):
    """`ganops data fetch folder --path X.npz` (or .npy) imports the arrays; channels-last and
    grey (N, H, W) arrays are turned to (N, C, H, W); a damaged file is named."""
    from gan_models.data.folders import load_folder

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "set.npz", images=x, labels=np.arange(6) % 2)
    got = load_folder(tmp_path / "set.npz")
    assert np.array_equal(got.arrays["images"], x.transpose(0, 3, 1, 2))
    assert got.labels.tolist() == [0, 1, 0, 1, 0, 1]
    np.save(tmp_path / "grey.npy", x[..., 0])
    assert load_folder(tmp_path / "grey.npy").arrays["images"].shape == (6, 1, 8, 8)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"bad\.npz: damaged"):
        load_folder(tmp_path / "bad.npz")
