"""Where a study's trials train: this process, local child processes, or a Prefect work pool.

Each worker kind offers ``free()`` (may another trial start now), ``start(number)``, ``poll()``
(trials whose worker ended, with how), ``held()`` (trials whose worker is known to be alive
though it may not beat for itself yet: the controller beats for them), ``busy()`` and
``stop()``; the controller in :func:`gan_models.tuning.controller.run_study` drives them the same
way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gan_models.errors import ConfigError, GanopsError
from gan_models.tuning.inputs import Tuning
from gan_models.tuning.trial import run_trial

TRIAL_DEPLOYMENT = "train/train-trial"
# From a flow run's start to its trial's first heartbeat (the flow run's process, then the
# trial's, import their libraries: about 10 s here); the controller beats for it meanwhile.
FLOW_RUN_STARTUP_S = 30.0


class InlineWorkers:
    """One worker: this process trains each trial before the next is asked."""

    inline = True

    def __init__(self, tuning: Tuning, parent_run_id: str | None) -> None:
        self.tuning, self.parent = tuning, parent_run_id

    def free(self) -> bool:
        return True

    def busy(self) -> int:
        return 0

    def start(self, number: int) -> None:
        run_trial(self.tuning, number, self.parent)

    def poll(self) -> list[tuple[int, str]]:
        return []

    def held(self) -> list[int]:
        return []  # the trial in this process beats for itself

    def stop(self) -> None:
        pass


@dataclass
class _Child:
    proc: subprocess.Popen
    gpu_fd: int | None
    log: Path
    started: float = field(default_factory=time.monotonic)


class ProcessWorkers:
    """``workers`` local child processes (``ganops tune ... --trial N``), one GPU each if any.

    Without GPUs the children split the CPU cores between them.
    """

    inline = False

    def __init__(self, tuning: Tuning, parent_run_id: str | None, workers: int) -> None:
        from gan_models.gpu import host_gpus, lock_dir

        self.tuning, self.parent, self.workers = tuning, parent_run_id, workers
        self.gpus = host_gpus()
        self.lock_dir = lock_dir()
        self.children: dict[int, _Child] = {}
        self._held: tuple[int, int] | None = None  # a GPU free() locked for the next start()

    def free(self) -> bool:
        """Room for another child, and on a GPU host a free GPU, which it holds from now on."""
        if len(self.children) >= self.workers:
            return False
        if not self.gpus or self._held is not None:
            return True
        from gan_models.gpu import try_lock

        for index in self.gpus:
            fd = try_lock(index, self.lock_dir)
            if fd is not None:
                self._held = (index, fd)  # handed to the next child start() launches
                return True
        return False

    def busy(self) -> int:
        return len(self.children)

    def start(self, number: int) -> None:
        env = dict(os.environ)
        index, fd = self._held or (None, None)
        self._held = None
        if index is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(index)
        else:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            env.setdefault("OMP_NUM_THREADS", str(threads))
        args = [sys.executable, "-m", "gan_models.cli"]
        args += self.tuning.trial_args(number, self.parent)
        log = self.tuning.study_dir / "logs" / f"trial_{number:04d}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            # A session of its own: a Ctrl-C at the terminal reaches the controller only, whose
            # stop() then interrupts each child exactly once (a second SIGINT skips the trainer's
            # checkpoint of its last completed step).
            proc = subprocess.Popen(
                args,
                cwd=self.tuning.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children[number] = _Child(proc, fd, log)

    def poll(self) -> list[tuple[int, str]]:
        ended = []
        for number, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            if child.gpu_fd is not None:
                os.close(child.gpu_fd)
            del self.children[number]
            ended.append((number, "ok" if code == 0 else f"exit {code}: {_tail(child.log)}"))
        return ended

    def held(self) -> list[int]:
        """The trials of the children still running (from their first instant on)."""
        return [n for n, child in self.children.items() if child.proc.poll() is None]

    def stop(self, grace_s: float = 30.0) -> None:
        """Interrupt the children (a trainer checkpoints its last completed step), then kill."""
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace_s
        for child in self.children.values():
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            if child.gpu_fd is not None:
                os.close(child.gpu_fd)
        self.children.clear()
        if self._held is not None:
            os.close(self._held[1])
            self._held = None


def _in_checkout(path: Path, root: Path) -> str:
    """``path`` relative to the project root when inside it: a worker on another host resolves
    it in its own checkout."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(root.resolve()))
    return str(path)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class PrefectWorkers:
    """Trials as flow runs of the ``train-trial`` deployment on a Prefect work pool.

    The pool's workers decide where each runs; each flow run holds one GPU of its host.
    """

    inline = False

    def __init__(self, tuning: Tuning, parent_run_id: str | None, workers: int, pool: str) -> None:
        if not os.environ.get("PREFECT_API_URL"):
            raise ConfigError(
                f"tune.pool: {pool!r} needs a Prefect server: set PREFECT_API_URL (`ganops up` "
                "starts one) or set tune.pool to null for local workers"
            )
        self.tuning, self.parent, self.workers, self.pool = tuning, parent_run_id, workers, pool
        self.runs: dict[int, Any] = {}
        self.not_started: set[int] = set()  # flow runs still waiting for a worker of the pool
        self.running_since: dict[int, float] = {}  # when each flow run was first seen running

    def free(self) -> bool:
        return len(self.runs) < self.workers

    def busy(self) -> int:
        return len(self.runs)

    def start(self, number: int) -> None:
        from prefect.deployments import run_deployment

        t = self.tuning
        job = {
            "params": _in_checkout(t.base_path, t.root),
            "overrides": [],
            "trial_of": {
                "tune_params": _in_checkout(t.tune_path, t.root),
                "overrides": t.overrides,
                "study": t.study_name,
                # as written (${GANOPS_OPTUNA_STORAGE}): each host expands it from its own
                # environment, so the password never reaches the flow run's stored parameters
                "storage": t.tune.storage if "$" in (t.tune.storage or "") else t.storage_url,
                "trial": number,
                "parent_run": self.parent,
                "track": t.track,
                "tracking_uri": t.tracking_uri,
            },
            # the worker's own checkout (its flow runs start there): another host's differs
            "project_dir": ".",
        }
        parameters = {"params": job}  # the flow's one parameter: TrainTrialParams
        try:
            run = run_deployment(
                TRIAL_DEPLOYMENT,
                parameters=parameters,
                timeout=0,
                flow_run_name=f"{t.study_name}-trial-{number}",
                tags=["ganops", "tune", t.study_name],
            )
        except Exception as e:  # noqa: BLE001 - no deployment, server gone: one clear line
            raise GanopsError(
                f"tune.pool {self.pool!r}: cannot start a {TRIAL_DEPLOYMENT} flow run ({e}); "
                "deploy the flows (`ganops up`) or set tune.pool to null"
            ) from None
        self.runs[number] = run.id

    def poll(self) -> list[tuple[int, str]]:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import PrefectHTTPStatusError

        ended = []
        with get_client(sync_client=True) as client:
            for number, run_id in list(self.runs.items()):
                try:
                    state = client.read_flow_run(run_id).state
                except PrefectHTTPStatusError as e:
                    if e.response.status_code < 500:
                        raise
                    # The server's database does not answer (a PostgreSQL restart): Prefect
                    # says 500 and does not retry. Ask again at the next poll; the controller's
                    # own storage calls bound how long an outage may last.
                    return ended
                if state is None or state.is_scheduled() or state.is_pending() or state.is_paused():
                    self.not_started.add(number)  # its process does not beat yet
                    continue
                self.not_started.discard(number)
                if not state.is_final():
                    # running: its trial's own process beats once it has started
                    self.running_since.setdefault(number, time.monotonic())
                    continue
                del self.runs[number]
                self.running_since.pop(number, None)
                ended.append((number, "ok" if state.is_completed() else state.name))
        return ended

    def held(self) -> list[int]:
        """Flow runs not started yet (scheduled, pending, paused): the pool still holds them;
        and those started less than FLOW_RUN_STARTUP_S ago, whose trial may not beat yet."""
        now = time.monotonic()
        starting = {n for n, t in self.running_since.items() if now - t < FLOW_RUN_STARTUP_S}
        return sorted((self.not_started | starting) & self.runs.keys())

    def abandon(self, numbers: set[int]) -> list[int]:
        """Forget the flow runs of trials the storage failed and retried (their host stopped
        beating: no one will ever finish those flow runs); mark them crashed on the server."""
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        gone = sorted(numbers & self.runs.keys())
        with get_client(sync_client=True) as client:
            for number in gone:
                run_id = self.runs.pop(number)
                self.not_started.discard(number)
                self.running_since.pop(number, None)
                with contextlib.suppress(Exception):  # already final, or the server is away
                    client.set_flow_run_state(
                        run_id, Crashed(message="trial retried: its host stopped"), force=True
                    )
        return gone

    def stop(self) -> None:
        self.runs.clear()  # the flow runs go on; a re-run of the study picks up their results
        self.not_started.clear()
        self.running_since.clear()
