"""Training: ``train(...)`` and what it writes."""

from gan_models.training.loop import StepInfo, TrainingDiverged, TrainResult, generate_images, train

__all__ = ["StepInfo", "TrainResult", "TrainingDiverged", "generate_images", "train"]
