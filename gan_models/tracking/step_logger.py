"""The training callback of a tracked run: per-step metrics and sample grids into MLflow.

It only queues them in the run's :class:`~gan_models.tracking.outbox.Outbox`, whose thread sends
them: a slow or stopped tracking server never slows the training loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gan_models.tracking.values import is_number

if TYPE_CHECKING:
    from gan_models.tracking.outbox import Outbox
    from gan_models.training.loop import StepInfo

SAMPLES_KEY = "samples"  # the time-stepped image series of sample grids


class MlflowLogger:
    """The training callback: losses, images/s, callback metrics and sample grids per step."""

    def __init__(self, outbox: Outbox, run_dir: Path) -> None:
        self.outbox, self.run_dir = outbox, run_dir
        self.logged_grids: set[int] = set()

    def __call__(self, info: StepInfo) -> None:
        values = dict(info.losses)
        if info.images_per_s is not None:
            values["images_per_s"] = info.images_per_s
        values.update({k: v for k, v in info.metrics.items() if is_number(v)})
        self.outbox.put_metrics(values, info.step)
        self.log_grid(info.step)

    def log_grid(self, step: int) -> None:
        """Queue RUN_DIR/samples/step_XXXXXXXX.png as the ``samples`` image at ``step``, once."""
        path = self.run_dir / "samples" / f"step_{step:08d}.png"
        if step in self.logged_grids or not path.is_file():
            return
        self.outbox.put_image(path, SAMPLES_KEY, step)
        self.logged_grids.add(step)
