"""Tracking, model registry and promotion: MLflow runs, the generator pyfunc, the gate.

The names below load on first use (PEP 562), so that importing a submodule such as the CLI's
``gan_models.tracking.cli`` does not import MLflow and torch: every ``ganops`` command, a usage
error included, would otherwise pay for them.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "RunRef": "run_ref",
    "attach_run": "attach",
    "log_evaluation": "evaluation_log",
    "read_run_ref": "run_ref",
    "resolve_tracking_uri": "store",
    "tracked_train": "training_run",
    "load_registered_generator": "model",
    "log_generator_model": "model",
    "PromotionDecision": "promotion",
    "RegisterParams": "gate",
    "gate": "gate",
    "promote": "promotion",
    "register_run": "registry",
    "start_mlflow_server": "server",
    "stop_process": "server",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = [
    "PromotionDecision",
    "RegisterParams",
    "RunRef",
    "attach_run",
    "gate",
    "load_registered_generator",
    "log_evaluation",
    "log_generator_model",
    "promote",
    "read_run_ref",
    "register_run",
    "resolve_tracking_uri",
    "start_mlflow_server",
    "stop_process",
    "tracked_train",
]
