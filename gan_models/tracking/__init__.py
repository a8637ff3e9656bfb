"""Tracking, model registry and promotion: MLflow runs, the generator pyfunc, the gate."""

from gan_models.tracking.mlflow_tracking import (
    RunRef,
    attach_run,
    log_evaluation,
    read_run_ref,
    resolve_tracking_uri,
    tracked_train,
)
from gan_models.tracking.model import load_registered_generator, log_generator_model
from gan_models.tracking.registry import (
    PromotionDecision,
    RegisterParams,
    gate,
    promote,
    register_run,
)
from gan_models.tracking.server import start_mlflow_server, stop_process

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
