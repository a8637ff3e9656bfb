"""Typed flow parameters: Prefect renders each model as a form in the UI and validates runs.

Every model rejects unknown keys, so a typo in a deployment's parameters fails before any stage
runs. Overrides use the syntax of ``dvc exp run -S``: ``section.key=value`` (the section says
which params file, as dvc.yaml lists it) or ``params/FILE.yaml:section.key=value``.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

# [FILE.yaml:]dotted.key=value; the value may be anything YAML parses (or empty = null).
OVERRIDE_RE = re.compile(
    r"^(?:(?P<file>[^:=\s]+\.ya?ml):)?(?P<key>[A-Za-z_][\w.-]*)=(?P<value>.*)$"
)


class FlowParams(BaseModel):
    """Base of every flow's parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def _check_overrides(items: list[str]) -> list[str]:
    bad = [o for o in items if not OVERRIDE_RE.match(o)]
    if bad:
        raise ValueError(
            f"expected [params/FILE.yaml:]section.key=value, e.g. train.lr=1e-4; got {bad}"
        )
    return items


Overrides = Annotated[list[str], AfterValidator(_check_overrides)]


class PipelineParams(FlowParams):
    """What one pipeline run trains: written into the params files the DVC stages read."""

    dataset: str | None = Field(
        None,
        description="dataset name (fetch.name): data/raw/NAME, data/processed/NAME; "
        "empty = keep params/data.yaml's",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    )
    source: str | None = Field(
        None, description="data source (fetch.source), see `ganops data sources`; empty = keep"
    )
    family: str | None = Field(
        None, description="GAN family (model.family), see `ganops families`; empty = keep"
    )
    preset: str | None = Field(
        None,
        description="params file whose data/model/loss/train sections become the training "
        "stage's, e.g. params/wgan-gp-mnist5k-small.yaml; empty = keep params/train.yaml",
    )
    overrides: Overrides = Field(
        default_factory=list,
        description="[params/FILE.yaml:]section.key=value, applied last (as `dvc exp run -S`)",
    )
    tune: bool = Field(False, description="run the hyperparameter search before training")
    refresh_data: bool = Field(
        False,
        description="re-run the fetch stage even if DVC thinks it is up to date (picks up a "
        "changed source); later stages re-run only if the data changed",
    )
    project_dir: str = Field(".", description="the ganops checkout holding dvc.yaml")


class RetrainParams(FlowParams):
    """The scheduled retrain: the pipeline on the current params and the current data."""

    project_dir: str = Field(".", description="the ganops checkout holding dvc.yaml")


class TrainTrialParams(FlowParams):
    """One training job (a tuning trial, a one-off run): ``ganops train PARAMS`` on one GPU."""

    params: str = Field(
        "params/train.yaml", description="params file, e.g. params/dcgan-mnist5k-small.yaml"
    )
    overrides: Overrides = Field(
        default_factory=list, description="section.key=value on top of the params file"
    )
    run_dir: str = Field(..., description="run folder; an unfinished run there is resumed")
    project_dir: str = Field(".", description="the ganops checkout (working directory)")

    @field_validator("overrides")
    @classmethod
    def _overrides_ok(cls, v: list[str]) -> list[str]:
        _check_overrides(v)
        if any(":" in o.split("=", 1)[0] for o in v):
            raise ValueError("a training job's overrides apply to its params file: no FILE: part")
        return v


class EvaluateFlowParams(FlowParams):
    """Score a trained run folder (``ganops evaluate RUN_DIR``)."""

    run_dir: str = Field("runs/train", description="a finished training run folder")
    overrides: Overrides = Field(
        default_factory=list, description="evaluate.key=value or features.key=value"
    )
    project_dir: str = Field(".", description="the ganops checkout (working directory)")


class PromoteParams(FlowParams):
    """Register an evaluated run (if given) and run the champion/challenger gate."""

    run_dir: str | None = Field(
        "runs/train", description="evaluated run to register first; empty = register nothing"
    )
    model: str | None = Field(
        None, description="registered model name; empty = the name registration reports"
    )
    force: bool = Field(False, description="promote even if the gate refuses (recorded)")
    project_dir: str = Field(".", description="the ganops checkout (working directory)")
