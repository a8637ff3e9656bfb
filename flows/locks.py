"""One pipeline at a time per checkout: a lock file in the project's state folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from prefect import get_run_logger

from gan_models.services import STATE_DIR


@contextlib.contextmanager
def project_lock(project: Path, poll_s: float = 5.0) -> Iterator[None]:
    """One pipeline at a time per checkout: runs share its params files and outputs."""
    path = project / STATE_DIR / "pipeline.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    get_run_logger().info("another pipeline runs in %s; waiting for it", project)
                    waited = True
                time.sleep(poll_s)
        yield
    finally:
        os.close(fd)
