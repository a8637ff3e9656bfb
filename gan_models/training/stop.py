"""Ctrl-C while training: a step is never cut in two, the completed step is checkpointed, and
the trainer exits with 130 and one line (a second Ctrl-C stops at once)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from gan_models.errors import GanopsError


class TrainingInterrupted(GanopsError):
    """Training was stopped by SIGINT (Ctrl-C) after a completed step, checkpointed there.

    The checkpoint holds the networks, EMA, optimizers, data position, RNG and logging window of
    that step, so ``--resume`` continues exactly as an uninterrupted run would have.
    """

    exit_code = 130  # the shell's convention for a process stopped by SIGINT

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class StopRequest:
    """SIGINT sets a flag that the loop reads between steps, so a step is never cut in two.

    Before the loop (``armed`` false: loading data, building networks) SIGINT interrupts at
    once, as Python's own handler does; once training is complete (``finishing``) the run's
    last files are written first. A second SIGINT interrupts at once (KeyboardInterrupt, no new
    checkpoint). Outside the main thread Python delivers no signals to the trainer, so nothing
    is installed there.
    """

    def __init__(self) -> None:
        self.requested = False
        self.armed = False
        self.finishing = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum, frame) -> None:
        if self.requested or not self.armed:
            raise KeyboardInterrupt
        self.requested = True
        what = (
            "training is complete; writing its last files"
            if self.finishing
            else "stopping after the step in progress and checkpointing it"
        )
        print(
            f"interrupt: {what} (Ctrl-C again stops at once, without a new checkpoint)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            previous = self._previous  # None: set outside Python; SIG_DFL is falsy but valid
            signal.signal(
                signal.SIGINT, signal.default_int_handler if previous is None else previous
            )
            self._installed = False
