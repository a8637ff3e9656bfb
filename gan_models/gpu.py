"""One GPU per training job: an exclusive lock file per GPU index on the host.

A GPU host runs ``prefect worker start --pool gpu --limit N`` for N GPUs, so up to N flow runs
train at once, each in its own process. Each takes the first GPU whose lock it can get
(``flock``, non-blocking) and hands ``CUDA_VISIBLE_DEVICES=<index>`` to the training process it
starts, so torch there sees exactly that GPU. The kernel drops a lock when its holder exits,
however it exits, so a killed run never leaks a GPU (a global concurrency limit on the Prefect
server would need its lease to expire first). More runs than GPUs wait for a free one.

Which GPUs: ``$GANOPS_GPUS`` (``0,1,3``; empty = none), else the indices ``nvidia-smi`` lists,
else none (CPU: no lock, nothing set). Locks live in ``$GANOPS_GPU_LOCK_DIR`` or
``~/.cache/ganops/gpu-locks``; every job on the host must use the same folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from gan_models.errors import ConfigError

log = logging.getLogger("ganops.gpu")


def host_gpus() -> list[int]:
    """GPU indices this host offers to ganops jobs (see the module docstring)."""
    env = os.environ.get("GANOPS_GPUS")
    if env is not None:
        try:
            return [int(x) for x in env.replace(" ", "").split(",") if x]
        except ValueError:
            raise ConfigError(
                f"GANOPS_GPUS: expected GPU indices like 0,1,2; got {env!r}"
            ) from None
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return (
        [int(x) for x in out.stdout.split() if x.strip().isdigit()] if out.returncode == 0 else []
    )


def lock_dir() -> Path:
    return Path(os.environ.get("GANOPS_GPU_LOCK_DIR") or Path.home() / ".cache/ganops/gpu-locks")


def try_lock(index: int, folder: Path) -> int | None:
    """An open descriptor holding GPU ``index``'s lock, or None if another job holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"gpu{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # Who holds it, for people looking at the folder; the lock itself is the flock.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextlib.contextmanager
def gpu_slot(
    gpus: list[int] | None = None,
    *,
    folder: str | Path | None = None,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
    on_wait: Callable[[list[int]], None] | None = None,
) -> Iterator[int | None]:
    """Hold one GPU for the duration of the block; yields its index (None on a CPU host).

    Waits while every GPU is taken, calling ``on_wait(gpus)`` once; ``timeout_s`` bounds the
    wait (then TimeoutError).
    """
    gpus = host_gpus() if gpus is None else gpus
    if not gpus:
        yield None
        return
    folder = Path(folder) if folder else lock_dir()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    waited = False
    while True:
        for index in gpus:
            fd = try_lock(index, folder)
            if fd is not None:
                try:
                    yield index
                finally:
                    os.close(fd)  # closing the descriptor releases the lock
                return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU among {gpus} within {timeout_s:.0f} s")
        if not waited:
            waited = True
            (on_wait or (lambda g: log.info("all GPUs %s are busy; waiting", g)))(gpus)
        time.sleep(poll_s)


def cuda_env(index: int | None) -> dict[str, str]:
    """The environment a training process needs to see only GPU ``index`` (none on CPU)."""
    return {} if index is None else {"CUDA_VISIBLE_DEVICES": str(index)}
