"""Training: ``train(...)`` and what it writes.

The names below load on first use (PEP 562): ``gan_models.training.params`` is read by every
command that loads params, and must not pay for torch until something trains.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "StepInfo": "loop",
    "TrainResult": "loop",
    "TrainingDiverged": "loop",
    "TrainingInterrupted": "stop",
    "generate_images": "generate",
    "train": "loop",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = sorted(_WHERE)
