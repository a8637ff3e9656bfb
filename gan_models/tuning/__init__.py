"""Hyperparameter search over GAN training with Optuna: see :mod:`gan_models.tuning.study`."""

from gan_models.tuning.config import TuneParams
from gan_models.tuning.study import Tuning, load_tuning, run_study
from gan_models.tuning.trial import run_trial

__all__ = ["TuneParams", "Tuning", "load_tuning", "run_study", "run_trial"]
