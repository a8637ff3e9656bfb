"""The training callback of a tracked run: per-step metrics and sample grids into MLflow."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.entities import Metric

from gan_models.tracking.values import is_number

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from gan_models.training.loop import StepInfo

SAMPLES_KEY = "samples"  # the time-stepped image series of sample grids


class MlflowLogger:
    """The training callback: losses, images/s, callback metrics and sample grids per step."""

    def __init__(self, client: MlflowClient, run_id: str, run_dir: Path) -> None:
        self.client, self.run_id, self.run_dir = client, run_id, run_dir
        self.logged_grids: set[int] = set()

    def __call__(self, info: StepInfo) -> None:
        values = dict(info.losses)
        if info.images_per_s is not None:
            values["images_per_s"] = info.images_per_s
        values.update({k: v for k, v in info.metrics.items() if is_number(v)})
        if values:
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, info.step) for k, v in values.items()]
            self.client.log_batch(self.run_id, metrics=metrics)
        self.log_grid(info.step)

    def log_grid(self, step: int) -> None:
        """Log RUN_DIR/samples/step_XXXXXXXX.png as the ``samples`` image at ``step``, once."""
        path = self.run_dir / "samples" / f"step_{step:08d}.png"
        if step in self.logged_grids or not path.is_file():
            return
        from PIL import Image

        with Image.open(path) as img:
            image = img.copy()
        self.client.log_image(self.run_id, image, key=SAMPLES_KEY, step=step, synchronous=True)
        self.logged_grids.add(step)
