"""Optuna, imported on first use with its noise quieted (every tuning module gets it here).

Imported lazily so that reading a study's inputs or the CLI's help does not load Optuna.
"""

from __future__ import annotations

import warnings


def import_optuna():
    """The ``optuna`` module, its logging at WARNING and its expected warnings silenced."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The controller asks and the worker beats (see trial.heartbeat()), not Study.optimize.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna
