"""Hyperparameter search over GAN training with Optuna: see :mod:`gan_models.tuning.controller`.

Modules, lowest first: config (params/tune.yaml), inputs (what a study is), optuna_import,
samplers, storage, summary, trial (one trial), report (best.yaml, the study's MLflow run),
workers (where trials run), controller (the run loop); cli and bench on top.
"""

from gan_models.tuning.config import TuneParams
from gan_models.tuning.controller import run_study
from gan_models.tuning.inputs import Tuning, load_tuning
from gan_models.tuning.trial import run_trial

__all__ = ["TuneParams", "Tuning", "load_tuning", "run_study", "run_trial"]
