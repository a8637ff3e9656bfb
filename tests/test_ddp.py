"""Data-parallel `ganops train` on CPU (gloo), through the real launcher (torchrun).

A 2-rank run must train what one process trains on the summed batch (losses per step and final
weights within float tolerance), write its run folder from rank 0 alone, survive a SIGKILL of a
rank (the job ends, `--resume` continues bit for bit), refuse bad launches with one error line,
and run across two "hosts" (the root network namespace and one created here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml
from bars import write_tiny_bars
from safetensors.torch import load_file
from torch import nn

from gan_models.data.format import read_imageset, write_imageset
from gan_models.families import FAMILIES
from gan_models.families.base import DataSpec
from gan_models.training import train
from gan_models.training.params import load_run_config

# Every test starts torchrun and its ranks (about 10 to 30 s each on 2 shared cores).
pytestmark = pytest.mark.slow

# What "the same to float tolerance" means here: 2 ranks sum the batch in two halves and batch
# norm's statistics in another order, so values differ in the last bits (about 1e-7 seen);
# these bounds leave room for that over a few dozen steps, far below a real difference.
LOSS_ATOL = 1e-5
WEIGHT_ATOL = 1e-5
JOB_END_S = 60  # a killed rank must end the whole job within this


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """48 labelled 8x8 grey images: 3 classes of noisy bars (as tests/test_training.py)."""
    return write_tiny_bars(tmp_path_factory.mktemp("data") / "bars")


@pytest.fixture(scope="module")
def tiny_unpaired(tmp_path_factory):
    """Unpaired 8x8 sets for CycleGAN: 24 bars (a) and 24 inverted bars (b)."""
    bars = read_imageset(write_tiny_bars(tmp_path_factory.mktemp("bars") / "bars"))
    images = np.asarray(bars.arrays["images"])
    path = tmp_path_factory.mktemp("data") / "inverted"
    write_imageset(
        path, {"a": images[:24], "b": 255 - images[24:]}, meta={"name": "inv"}, kind="unpaired"
    )
    return path


# Options of a family's own (beyond the shared keys in ``reads``), small enough for 8x8 images.
OWN_OPTIONS = {
    "stylegan": ({"mapping_layers": 2}, {"r1_every": 2}),  # R1 through the gathered stddev
    "cyclegan": ({"res_blocks": 1}, {"pool_size": 6}),  # the history fills in the first step
    "srgan": ({"res_blocks": 1, "scale": 2}, {}),
}


def write_params(path: Path, family: str, data: Path, **train) -> Path:
    t = {"steps": 8, "batch_size": 8, "checkpoint_every": 4, "log_every": 1, "progress": False}
    t.update(train)
    model = {"width": 8, "latent_dim": 8, "depth": 2, "embed_dim": 4}
    reads = FAMILIES[family].reads  # a key the family does not read is refused
    model = {"family": family, **{k: v for k, v in model.items() if f"model.{k}" in reads}}
    own_model, own_loss = OWN_OPTIONS.get(family, ({}, {}))
    doc = {
        "model": {**model, **own_model},
        "data": {"path": str(data), "image_size": 8},
        "train": t,
    }
    if own_loss:
        doc["loss"] = own_loss
    path.write_text(yaml.safe_dump(doc))
    return path


def ganops(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gan_models.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def train_ranks(params: Path, run_dir: Path, *extra: str) -> tuple[int, str, str]:
    proc = ganops(
        "train", str(params), "--run-dir", str(run_dir), "--no-track", *extra,
        "--nproc-per-node", "2",
    )  # fmt: skip
    return finish(proc)


def stats(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in s.items() if "/" in k} for s in stats(run_dir)]


# A bias feeding straight into a normalisation (batch or instance norm) has a zero gradient up to
# round-off, which Adam turns into steps of about lr whatever its sign: such biases (and the
# running means that follow them) differ between any two summation orders, and the norm removes
# them from the output in training. Vanilla's MLP generator has two (Linear -> BatchNorm1d),
# SRGAN's residual blocks and CycleGAN's generators have them after convolutions; DCGAN's
# convolutions before batch norm have no bias.
def noise_only(params: Path, spec: DataSpec) -> frozenset[str]:
    """Names in generator.safetensors of the biases a norm right after removes, and of the
    running means that follow them."""
    config = load_run_config(params)
    G = FAMILIES[config.model.family].build(config, spec)["G"]
    names = set()
    for path, m in G.named_modules():
        kids = list(m.named_children())
        for (name, a), (norm_name, b) in zip(kids, kids[1:], strict=False):
            layer = isinstance(a, nn.Linear | nn.modules.conv._ConvNd)
            if layer and a.bias is not None and isinstance(b, nn.modules.batchnorm._NormBase):
                at = f"G.{path}." if path else "G."
                names.add(f"{at}{name}.bias")
                if b.track_running_stats:
                    names.add(f"{at}{norm_name}.running_mean")
    return frozenset(names)


IMAGES = DataSpec(channels=1, image_size=8, num_classes=3)  # tiny_data's
UNPAIRED = DataSpec(channels=1, image_size=8, kind="unpaired", input_size=8, input_channels=1)


def assert_close_runs(
    single: Path,
    ranks: Path,
    skip: frozenset[str] = frozenset(),
    loss_rtol: float = 0.0,
    weight_atol: float = WEIGHT_ATOL,
) -> None:
    a, b = losses(single), losses(ranks)
    assert len(a) == len(b) and a and all(a)
    for step, (x, y) in enumerate(zip(a, b, strict=True), 1):
        assert x.keys() == y.keys(), step
        for k in x:
            bound = LOSS_ATOL + loss_rtol * abs(x[k])
            assert abs(x[k] - y[k]) <= bound, f"step {step} {k}: {x[k]} vs {y[k]}"
    wa, wb = load_file(single / "generator.safetensors"), load_file(ranks / "generator.safetensors")
    assert wa.keys() == wb.keys()
    assert skip <= wa.keys()
    for k in wa.keys() - skip:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=weight_atol, rtol=0), k


def layout(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))


def single_run(params: Path, run_dir: Path) -> Path:
    train(params, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def dcgan_runs(tiny_data, tmp_path_factory):
    """DCGAN (batch norm) with DiffAugment at p=0.5: one process, and 2 ranks via the CLI."""
    root = tmp_path_factory.mktemp("dcgan")
    params = write_params(
        root / "p.yaml", "dcgan", tiny_data, augment=["color", "translation", "cutout"],
        augment_p=0.5,
    )  # fmt: skip
    single = single_run(params, root / "single")
    # tracked (the default): rank 0 alone opens the MLflow run and logs to it
    uri = f"sqlite:///{root / 'mlflow.db'}"
    proc = ganops(
        "train", str(params), "--run-dir", str(root / "ranks"), "--tracking-uri", uri,
        "--nproc-per-node", "2",
    )  # fmt: skip
    rc, out, err = finish(proc)
    assert rc == 0, err
    return params, single, root / "ranks", out, uri


def test_two_ranks_equal_one_process_dcgan(dcgan_runs):
    _, single, ranks, out, _ = dcgan_runs
    assert_close_runs(single, ranks)
    assert out.count("trained dcgan for 8 steps") == 1  # rank 0 alone reports


@pytest.mark.parametrize("family", ["cgan", "vanilla", "wgan", "wgan-gp"])
def test_two_ranks_equal_one_process(family, tiny_data, tmp_path):
    """The other families allowed data-parallel: labels (cgan), BatchNorm1d (vanilla), weight
    clipping (wgan), a critic without batch norm and sharded penalty draws (wgan-gp)."""
    params = write_params(tmp_path / "p.yaml", family, tiny_data, steps=4, checkpoint_every=2)
    single = single_run(params, tmp_path / "single")
    rc, _, err = train_ranks(params, tmp_path / "ranks")
    assert rc == 0, err
    skip = noise_only(params, IMAGES)
    if family == "vanilla":  # Linear -> BatchNorm1d twice
        assert skip == {
            "G.net.0.bias",
            "G.net.1.running_mean",
            "G.net.3.bias",
            "G.net.4.running_mean",
        }
    else:
        assert not skip
    assert_close_runs(single, tmp_path / "ranks", skip)


@pytest.mark.parametrize("family", ["stylegan", "cyclegan", "srgan"])
def test_two_ranks_equal_one_process_across_the_batch(family, tiny_data, tiny_unpaired, tmp_path):
    """The families with layers that look across the batch: StyleGAN (minibatch stddev over the
    global batch, with R1 through it; the tracked average style; per-layer noise), CycleGAN (the
    history of fakes, the input bank) and SRGAN (batch norm in G and D, the input bank). A sample
    grid midway is drawn by rank 0 alone while the others train on."""
    data = tiny_unpaired if family == "cyclegan" else tiny_data
    params = write_params(
        tmp_path / "p.yaml", family, data, steps=4, checkpoint_every=2, sample_every=2
    )
    single = single_run(params, tmp_path / "single")
    rc, _, err = train_ranks(params, tmp_path / "ranks")
    assert rc == 0, err
    assert (tmp_path / "ranks" / "samples" / "step_00000002.png").exists()
    skip = noise_only(params, UNPAIRED if family == "cyclegan" else IMAGES)
    if family == "stylegan":  # no normalisation layers
        assert not skip
        assert_close_runs(single, tmp_path / "ranks")
        return
    if family == "srgan":  # conv -> batch norm twice per residual block, once after them
        assert len(skip) == 2 * 3
        assert_close_runs(single, tmp_path / "ranks", skip)
        return
    # In CycleGAN's two generators (5 in each trunk, 2 in its residual block) the noise in those
    # biases reaches the other weights through round-off: within 4 steps the runs part by ~1e-5
    # of the losses and ~1e-4 of the weights. A history of fakes kept per rank instead of over
    # the global batch parts by 3e-3 in D's loss at the first step (seen), 30 times the bound.
    assert len(skip) == 2 * 7
    assert_close_runs(single, tmp_path / "ranks", skip, loss_rtol=1e-4, weight_atol=2e-4)
    a = torch.load(single / "checkpoints" / "step_00000004.pt", weights_only=False)
    b = torch.load(tmp_path / "ranks" / "checkpoints" / "step_00000004.pt", weights_only=False)
    pools = a["nets"]["history"]  # the history one process keeps, on the ranks too
    assert int(pools["a.count"]) == int(pools["b.count"]) == 6
    for k, v in pools.items():
        assert torch.allclose(v.float(), b["nets"]["history"][k].float(), atol=2e-4, rtol=0), k


def test_rank0_alone_writes_the_run_folder(dcgan_runs):
    _, single, ranks, _, uri = dcgan_runs
    assert layout(ranks) == sorted([*layout(single), "mlflow_run.json"])
    from mlflow import MlflowClient

    ref = json.loads((ranks / "mlflow_run.json").read_text())
    client = MlflowClient(uri)
    assert len(client.search_runs([ref["experiment_id"]])) == 1  # one run, not one per rank
    assert client.get_run(ref["run_id"]).info.status == "FINISHED"
    logged = [m.value for m in client.get_metric_history(ref["run_id"], "G/loss")]
    assert logged == pytest.approx([s["G/loss"] for s in stats(ranks)], abs=1e-6)
    # a second writer would have doubled the appended files
    assert [s["step"] for s in stats(ranks)] == list(range(1, 9))
    assert (ranks / "log.txt").read_text().count("training dcgan") == 1
    state = torch.load(ranks / "checkpoints" / "step_00000008.pt", weights_only=False)
    assert state["world_size"] == 2
    assert json.loads((ranks / "run.json").read_text())["status"] == "completed"


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def rank_process(pid: int, rank: int) -> psutil.Process:
    for p in descendants(pid):
        try:
            if p.environ().get("RANK") == str(rank) and "gan_models.cli" in p.cmdline():
                return p
        except psutil.Error:
            continue
    raise AssertionError(f"no rank {rank} under {pid}")


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigkill_of_a_rank_ends_the_job_and_resume_is_exact(tiny_data, tmp_path):
    params = write_params(
        tmp_path / "p.yaml", "dcgan", tiny_data, steps=60, checkpoint_every=10, log_every=5,
        keep_checkpoints=20,
    )  # fmt: skip
    whole = tmp_path / "whole"
    rc, _, err = train_ranks(params, whole)
    assert rc == 0, err

    run = tmp_path / "killed"
    proc = ganops(
        "train", str(params), "--run-dir", str(run), "--no-track", "--nproc-per-node", "2"
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "step_00000020.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint 20 in time"
        time.sleep(0.02)
    tree = descendants(proc.pid)
    victim = rank_process(proc.pid, 1)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    rc, _, err = finish(proc, timeout=JOB_END_S)
    assert rc != 0
    print(f"job ended {time.monotonic() - killed_at:.1f} s after the kill")
    assert time.monotonic() - killed_at < JOB_END_S
    time.sleep(0.5)
    assert not [p.pid for p in tree if alive(p)], "processes of the job outlived it"
    assert not (run / "run.json").exists(), "the job finished before the kill"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names and all(n.startswith("step_") and n.endswith(".pt") for n in names), names
    last = int(names[-1][5:13])
    assert 20 <= last < 60
    for n in names:  # every checkpoint left is whole
        torch.load(run / "checkpoints" / n, weights_only=False)

    rc, _, err = train_ranks(params, run, "--resume")
    assert rc == 0, err
    a = torch.load(whole / "checkpoints" / "step_00000060.pt", weights_only=False)
    b = torch.load(run / "checkpoints" / "step_00000060.pt", weights_only=False)
    for table in ("nets", "ema", "optims"):
        for name in a[table]:
            sa, sb = a[table][name], b[table][name]
            if table == "optims":
                sa, sb = sa["state"], sb["state"]
                pairs = [(sa[i][k], sb[i][k]) for i in sa for k in sa[i]]
            else:
                pairs = [(sa[k], sb[k]) for k in sa]
            assert all(torch.equal(x, y) for x, y in pairs), f"{table}.{name} differs"
    assert load_file(whole / "generator.safetensors").keys()
    ga, gb = load_file(whole / "generator.safetensors"), load_file(run / "generator.safetensors")
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    assert losses(whole) == losses(run)


def error_line(args: list[str]) -> str:
    rc, out, err = finish(ganops(*args), timeout=120)
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_launches_exit_2_with_one_line(dcgan_runs, tiny_data, tmp_path):
    params, single, ranks, _, _ = dcgan_runs
    run = ["train", str(params), "--run-dir", str(tmp_path / "r"), "--no-track"]
    assert "--nproc-per-node" in error_line([*run, "--nproc-per-node", "0"])
    line = error_line([*run, "--nproc-per-node", "3"])
    assert "train.batch_size: 8 is not divisible by the 3 ranks" in line
    line = error_line([*run, "--nproc-per-node", "1", "--nnodes", "2"])
    assert "--master-addr" in line
    assert not (tmp_path / "r").exists()

    # A 1-process run continued on 2 ranks, and a 2-rank run continued by one process.
    for trained, extra, saved, asked in (
        (single, ["--nproc-per-node", "2"], 1, 2),
        (ranks, [], 2, 1),
    ):
        copy = tmp_path / f"copy-{saved}"
        shutil.copytree(trained, copy)
        (copy / "run.json").unlink()
        before = layout(copy)
        line = error_line(
            ["train", str(params), "--run-dir", str(copy), "--no-track", "--resume", *extra]
        )
        assert f"trained on {saved} process(es), not {asked}" in line
        assert layout(copy) == before


# -- two hosts: the root network namespace and one made for the test -------------------------


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@pytest.fixture
def second_host():
    """A network namespace joined to the root one by a veth pair on 10.213.7.0/24."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("needs root, ip and unshare to make a second host")
    tag = uuid.uuid4().hex[:6]
    ns, here, there = f"ganops-ddp-{tag}", f"gd0{tag}", f"gd1{tag}"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        sh("ip", "link", "set", there, "netns", ns)
        sh("ip", "addr", "add", "10.213.7.1/24", "dev", here)
        sh("ip", "link", "set", here, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", "10.213.7.2/24", "dev", there)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", there, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield {"ns": ns, "here": here, "there": there, "master": "10.213.7.1"}
    finally:
        sh("ip", "link", "del", here, check=False)  # takes its peer with it
        sh("ip", "netns", "del", ns, check=False)


def free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def test_two_nodes_across_a_namespace_equal_one_process(dcgan_runs, second_host, tmp_path):
    params, single, _, _, _ = dcgan_runs
    h = second_host
    port = str(free_port(h["master"]))

    def node(rank: int, run_dir: Path) -> list[str]:
        return [
            sys.executable, "-m", "gan_models.cli", "train", str(params), "--run-dir",
            str(run_dir), "--no-track", "--nproc-per-node", "1", "--nnodes", "2",
            "--node-rank", str(rank), "--master-addr", h["master"], "--master-port", port,
        ]  # fmt: skip

    # Node 1 gets a run folder of its own: it must stay unwritten (rank 0 writes, on node 0).
    inner = " ".join(node(1, tmp_path / "node1"))
    env1 = {**os.environ, "GLOO_SOCKET_IFNAME": h["there"]}
    node1 = subprocess.Popen(
        ["ip", "netns", "exec", h["ns"], "unshare", "--uts", "sh", "-c",
         f"hostname ganops-node1 && exec {inner}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env1,
    )  # fmt: skip
    env0 = {**os.environ, "GLOO_SOCKET_IFNAME": h["here"]}
    node0 = subprocess.Popen(
        node(0, tmp_path / "node0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env0,
    )  # fmt: skip
    try:
        rc0, _, err0 = finish(node0)
        rc1, _, err1 = finish(node1)
    finally:
        for p in (node0, node1):
            if p.poll() is None:
                p.kill()
    assert rc0 == 0, err0
    assert rc1 == 0, err1
    assert_close_runs(single, tmp_path / "node0")
    assert not (tmp_path / "node1").exists()
    assert socket.gethostname() != "ganops-node1"  # the UTS namespace kept the host's name
