"""The ``tune`` section of params/tune.yaml: study, budget, sampler, pruner and search space.

Search-space keys are dotted training-params keys (``train.lr``, ``loss.type``); an element of a
list-valued key is addressed by its index (``train.betas.0``). Every key and every end of every
range is checked against the training params before a study starts, so a typo or an invalid
value fails with its key named instead of failing trials one by one. A searched key that the
family does not read is refused (it would change nothing), and so is a training override
(``--set train.steps=...``) of a key that the budget or the search space sets in every trial,
which would otherwise be silently replaced.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gan_models.config import Section, validate_model
from gan_models.errors import ConfigError
from gan_models.training.params import TrainParams

OBJECTIVES = ("fid", "seconds")  # final FID at the budget; wall time of the trial's training


class Param(Section):
    """One searched hyperparameter: a float or int range, or a list of choices."""

    type: Literal["float", "int", "categorical"] | None = Field(
        None, description="None = categorical with choices, int when low/high are ints, else float"
    )
    low: int | float | None = None  # ints stay ints: {low: 16, high: 64} is an int range
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Param:
        kind = self.kind
        if kind == "categorical":
            if not self.choices:
                raise ValueError("categorical: expected a non-empty list of choices")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"{kind}: expected low and high (or choices)")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) is above high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("log: low must be above 0")
        return self

    @property
    def kind(self) -> str:
        if self.type:
            return self.type
        if self.choices is not None:
            return "categorical"
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high))
        return "int" if ints and (self.step is None or isinstance(self.step, int)) else "float"

    def distribution(self):
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        kind = self.kind
        if kind == "categorical":
            # Optuna stores choices as given; lists (e.g. betas) are stored as JSON strings.
            return CategoricalDistribution([_choice_key(c) for c in self.choices or []])
        if kind == "int":
            return IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def values_to_check(self) -> list[Any]:
        """The values a trial can get at the edges: ends of a range, every choice."""
        if self.kind == "categorical":
            return list(self.choices or [])
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


def _choice_key(value: Any) -> Any:
    """Optuna's choices must be None, bool, int, float or str: others travel as JSON."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


def choice_value(stored: Any, param: Param) -> Any:
    """The params value of a stored Optuna value (undoes :func:`_choice_key`)."""
    if param.kind == "categorical" and isinstance(stored, str):
        for c in param.choices or []:
            if _choice_key(c) == stored:
                return c
    return stored


class SamplerConfig(Section):
    type: Literal["tpe", "random"] = "tpe"
    seed: int | None = Field(0, description="sampler seed (same seed + space = same proposals)")
    startup_trials: int = Field(5, ge=0, description="random trials before TPE models the space")


class PrunerConfig(Section):
    """Stops trials whose FID so far is bad (``none`` = off):

    - ``median``: worse than the median of earlier trials at the same step;
    - ``percentile``: worse than the ``percentile``-th best of earlier trials at the same step
      (25 keeps the best quarter: stricter than the median, more compute saved, more risk);
    - ``successive_halving``: asynchronous successive halving, a trial goes on past
      ``min_resource * reduction_factor**k`` steps only if it is in the best
      ``1/reduction_factor`` of the trials that reached that rung (no start-up trials);
    - ``hyperband``: several successive-halving brackets with different first rungs.
    """

    type: Literal["median", "percentile", "successive_halving", "hyperband", "none"] = (
        "successive_halving"
    )
    startup_trials: int = Field(
        3, ge=0, description="median, percentile: trials that run to the end before any is pruned"
    )
    warmup_steps: int = Field(
        0, ge=0, description="median, percentile: steps before a trial can be pruned"
    )
    percentile: float = Field(
        25.0, gt=0, lt=100, description="percentile: the share (%) of best trials kept per step"
    )
    min_resource: int | None = Field(
        None,
        ge=1,
        description="successive_halving, hyperband: steps every trial gets; None = train.fid_every",
    )
    reduction_factor: int = Field(
        3, ge=2, description="successive_halving, hyperband: keeps 1/factor per rung"
    )


class HeartbeatConfig(Section):
    """A trial whose process stops beating for ``grace_period`` s is failed and retried."""

    interval: int = Field(30, ge=1, description="seconds between a running trial's heartbeats")
    grace_period: int = Field(120, ge=1, description="seconds without one before it is stale")
    max_retry: int = Field(2, ge=0, description="retries of a failed (stale) trial")


class TuneParams(Section):
    """What ``ganops tune`` (and the DVC ``tune`` stage) searches, and how."""

    enabled: bool = Field(
        False,
        description="the DVC stage runs the study only when true; otherwise params/best.yaml "
        "is the training params unchanged",
    )
    study: str | None = Field(
        None,
        description="study name; re-running resumes it. None = '<params name>-<hash of the "
        "training params, budget, space and objectives>': changed inputs start a new study",
    )
    storage: str | None = Field(
        None,
        description="Optuna RDB URL; None = sqlite:///<project>/runs/tune/studies.db "
        "(a postgresql:// URL for trials on several hosts)",
    )
    trials: int = Field(12, ge=1, description="finished (complete or pruned) trials to reach")
    workers: int = Field(1, ge=1, description="trials at once (each with its own GPU, if any)")
    pool: str | None = Field(
        None,
        description="Prefect work pool: trials run as flow runs of the train-trial deployment "
        "(needs PREFECT_API_URL); None = local processes",
    )
    objectives: list[Literal["fid", "seconds"]] = Field(
        ["fid"], min_length=1, max_length=2, description="[fid] or [fid, seconds] (Pareto front)"
    )
    budget: dict[str, Any] = Field(
        default_factory=dict,
        description="training overrides for every trial, e.g. train.steps, train.fid_every",
    )
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    max_failures: int = Field(
        3, ge=1, description="stop the study after this many trials failed for good"
    )
    space: dict[str, Param] = Field(
        ..., min_length=1, description="searched keys; an entry set to null is not searched"
    )

    @field_validator("space", mode="before")
    @classmethod
    def _drop_unsearched(cls, value: Any) -> Any:
        # ``--set tune.space.model.latent_dim=null`` takes a key out of the search
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None}
        return value

    @model_validator(mode="after")
    def _objectives_unique(self) -> TuneParams:
        if self.objectives[0] != "fid" or len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives: expected [fid] or [fid, seconds], got {self.objectives}")
        return self

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def prunes(self) -> bool:
        """Pruning applies to a single FID objective only (Optuna cannot prune a Pareto study)."""
        return not self.multi_objective and self.pruner.type != "none"

    def storage_url(self, root) -> str:
        if self.storage:
            return os.path.expandvars(self.storage)
        return f"sqlite:///{root / 'runs' / 'tune' / 'studies.db'}"

    def budget_overrides(self) -> list[str]:
        return [f"{k}={json.dumps(v)}" for k, v in self.budget.items()]


def set_dotted(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set ``key`` (``train.lr``, ``train.betas.0``) in plain params data, in place."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{source}: {key}: {part!r} is not an index of {node}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                raise ConfigError(
                    f"{source}: {key}: unknown key {part!r}; expected one of {sorted(node)}"
                )
            if last:
                node[part] = value
            else:
                if isinstance(node[part], tuple):
                    node[part] = list(node[part])
                node = node[part]
        else:
            raise ConfigError(f"{source}: {key}: {'.'.join(parts[:i])} is not a section")


def apply_values(
    base: TrainParams, values: dict[str, Any], source: str = "params/tune.yaml"
) -> TrainParams:
    """``base`` with ``values`` ({dotted key: value}) set, validated as training params."""
    data = json.loads(json.dumps(base.to_dict()))
    for key, value in values.items():
        set_dotted(data, key, value, source)
    return validate_model(TrainParams, data, f"{source} (trial params)")


def check_training_overrides(tune: TuneParams, overrides: list[str] | None) -> None:
    """Refuse a training override (``train.steps=120``) of a key that ``tune.budget`` or
    ``tune.space`` sets in every trial: the study would silently replace it. The message names
    what to set instead."""
    for item in overrides or ():
        key, _, raw = item.partition("=")
        key = key.strip()
        if key.startswith("tune."):
            continue
        for owned in tune.budget:
            if _overlaps(key, owned):
                raise ConfigError(
                    f"--set {item}: in a study, {owned} is set by tune.budget.{owned} for every "
                    f"trial; set that instead (--set tune.budget.{owned}={raw.strip() or '...'})"
                )
        for owned in tune.space:
            if _overlaps(key, owned):
                raise ConfigError(
                    f"--set {item}: {owned} is searched (tune.space.{owned}), so each trial sets "
                    f"its own value; to fix it, take it out of the search "
                    f"(--set tune.space.{owned}=null) and set it again"
                )


def _overlaps(a: str, b: str) -> bool:
    """Whether two dotted keys address the same value or one holds the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def check_space(
    tune: TuneParams, base: TrainParams, source: str, overrides: list[str] | None = None
) -> None:
    """Every searched key exists in the training params, the family reads it, and every edge
    value is valid there; no training override (``overrides``) is replaced by the study."""
    from gan_models.families import FAMILIES
    from gan_models.families.base import SHARED_SECTIONS

    check_training_overrides(tune, overrides)
    budget = dict(tune.budget)
    params = apply_values(base, budget, f"{source}: tune.budget")
    family = FAMILIES[params.model.family]
    searched_family = "model.family" in tune.space  # then each proposal is checked below
    for key in () if searched_family else tune.space:
        parts = key.split(".")
        top = ".".join(parts[:2])
        if parts[0] in SHARED_SECTIONS and top not in family.reads:
            raise ConfigError(
                f"{source}: tune.space.{key}: the {family.name} family does not read {top}, so "
                f"searching it would change nothing; take it out of the search "
                f"(--set tune.space.{key}=null)"
            )
    for key, param in tune.space.items():
        for value in param.values_to_check():
            try:
                apply_values(params, {key: value}, f"{source}: tune.space")
            except ConfigError as e:
                raise ConfigError(f"{e} [tune.space.{key} = {value!r}]") from None
    if "fid" in tune.objectives and not params.train.fid_every:
        raise ConfigError(
            f"{source}: tune.budget: the FID objective needs train.fid_every > 0 (FID is "
            "reported every fid_every steps, which is what the pruner sees)"
        )
