"""The study's sampler and pruner, built from ``tune.sampler`` and ``tune.pruner``.

Only the controller's sampler proposes params (a worker opens the study with a throwaway one);
the pruner decides, from each reported FID, whether a trial stops early.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gan_models.tuning.config import apply_values
from gan_models.tuning.optuna_import import import_optuna

if TYPE_CHECKING:
    from gan_models.tuning.inputs import Tuning


def make_sampler(tuning: Tuning):
    """The seeded sampler of ``tune.sampler`` (random, or TPE after its startup trials)."""
    optuna = import_optuna()
    s = tuning.tune.sampler
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.startup_trials)


def make_pruner(tuning: Tuning):
    """The pruner of ``tune.pruner`` (NopPruner when the study does not prune)."""
    optuna = import_optuna()
    p, t = tuning.tune.pruner, tuning.tune
    if not t.prunes:
        return optuna.pruners.NopPruner()
    if p.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps
        )
    if p.type == "percentile":
        return optuna.pruners.PercentilePruner(
            p.percentile, n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_steps
        )
    budget = apply_values(tuning.base, t.budget)
    min_resource = p.min_resource or budget.train.fid_every
    if p.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=min_resource, reduction_factor=p.reduction_factor
        )
    return optuna.pruners.HyperbandPruner(
        min_resource=min_resource,
        max_resource=budget.train.steps,
        reduction_factor=p.reduction_factor,
    )
