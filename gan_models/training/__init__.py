"""Training: ``train(...)`` and what it writes."""

from gan_models.training.generate import generate_images
from gan_models.training.loop import StepInfo, TrainingDiverged, TrainResult, train

__all__ = ["StepInfo", "TrainResult", "TrainingDiverged", "generate_images", "train"]
