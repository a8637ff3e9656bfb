"""Starting a data-parallel ``ganops train``: checks on the launch, then torchrun.

``ganops train PARAMS --nproc-per-node N`` checks everything a user can get wrong before any
process starts (so a mistake is one ``error:`` line and exit 2, not N tracebacks), then runs
``python -m torch.distributed.run`` (torchrun), which starts N ranks of ``ganops train`` on
this host. torchrun is the launcher because it already does what a job of several processes
needs: it sets RANK/WORLD_SIZE/LOCAL_RANK, and when one rank dies it stops the others and exits
non-zero, so a killed rank never leaves the rest waiting. One host uses ``--standalone``
(a rendezvous on a free local port); several hosts use a static master address::

    host A: ganops train P --run-dir D --nproc-per-node 1 --nnodes 2 --node-rank 0 \\
                --master-addr 10.0.0.1 --master-port 29500
    host B: ganops train P --run-dir D --nproc-per-node 1 --nnodes 2 --node-rank 1 \\
                --master-addr 10.0.0.1 --master-port 29500

What the ranks do is :mod:`gan_models.training.distributed`.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gan_models.errors import GanopsError
from gan_models.training.params import TrainParams


@dataclass(frozen=True)
class Launch:
    """How many ranks, on how many hosts, and where they meet."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500

    @property
    def world(self) -> int:
        return self.nproc_per_node * self.nnodes

    def check(self) -> None:
        if self.nproc_per_node < 1:
            raise GanopsError(
                f"--nproc-per-node: expected a number of processes >= 1, got {self.nproc_per_node}"
            )
        if self.nnodes < 1:
            raise GanopsError(f"--nnodes: expected a number of hosts >= 1, got {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            raise GanopsError(
                f"--node-rank: expected 0 to {self.nnodes - 1} for --nnodes {self.nnodes}, "
                f"got {self.node_rank}"
            )
        if self.nnodes > 1 and not self.master_addr:
            raise GanopsError(
                "--master-addr: several hosts (--nnodes > 1) need the address of node 0"
            )
        if not 1 <= self.master_port <= 65535:
            raise GanopsError(f"--master-port: expected 1 to 65535, got {self.master_port}")

    def torchrun(self, worker_args: list[str]) -> list[str]:
        """The torchrun command line that starts this host's ranks of ``ganops WORKER_ARGS``."""
        cmd = [sys.executable, "-m", "torch.distributed.run"]
        cmd += ["--nproc-per-node", str(self.nproc_per_node)]
        if self.nnodes == 1 and not self.master_addr:
            cmd += ["--standalone"]
        else:
            cmd += ["--nnodes", str(self.nnodes), "--node-rank", str(self.node_rank)]
            cmd += ["--master-addr", str(self.master_addr)]
            cmd += ["--master-port", str(self.master_port)]
        return [*cmd, "-m", "gan_models.cli", *worker_args]


def saved_world(run_dir: Path) -> int | None:
    """The world size of the newest checkpoint in ``run_dir`` (1 before data-parallel runs
    existed), None without one."""
    from gan_models.training.checkpoint import latest_checkpoint, load_checkpoint

    found = latest_checkpoint(run_dir)
    if found is None:
        return None
    return int(load_checkpoint(found[1]).get("world_size", 1))


def check_launch(
    launch: Launch, params: TrainParams, run_dir: Path, resume: bool | Literal["auto"]
) -> None:
    """Refuse, before starting anything, a launch the ranks would refuse."""
    from gan_models.training.distributed import check_parallel, check_world
    from gan_models.training.run_dir import restart_reason

    launch.check()
    check_parallel(params.train.batch_size, launch.world)
    if not resume or launch.node_rank != 0:  # the run folder is node 0's
        return
    saved = saved_world(run_dir)
    if saved is None or (resume == "auto" and restart_reason(run_dir, params)):
        return  # nothing to continue: the run starts (over)
    check_world(saved, launch.world, f"--resume {run_dir}")


def worker_args(
    params: Path,
    run_dir: Path,
    overrides: list[str],
    resume: bool | Literal["auto"],
    track: bool,
    tracking_uri: str | None,
) -> list[str]:
    """The ``ganops`` arguments each rank runs: the same training, without the launch options
    (the run folder is fixed here so that every rank names the same one)."""
    args = ["train", str(params), "--run-dir", str(run_dir)]
    for o in overrides:
        args += ["--set", o]
    if resume == "auto":
        args.append("--auto-resume")
    elif resume:
        args.append("--resume")
    args.append("--track" if track else "--no-track")
    if tracking_uri:
        args += ["--tracking-uri", tracking_uri]
    return args


def run_ranks(launch: Launch, worker_args: list[str]) -> int:
    """Run this host's ranks under torchrun; its exit status (non-zero if any rank failed)."""
    proc = subprocess.Popen(launch.torchrun(worker_args))
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # torchrun got the same Ctrl-C and stops the ranks itself:
            continue  # killing it here would orphan them
