"""Typed flow parameters: Prefect renders each model as a form in the UI and validates runs.

Every model rejects unknown keys, so a typo in a deployment's parameters fails before any stage
runs. Overrides use the syntax of ``dvc exp run -S``: ``section.key=value`` (the section says
which params file, as dvc.yaml lists it) or ``params/FILE.yaml:section.key=value``.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

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


def _no_file_part(items: list[str]) -> list[str]:
    _check_overrides(items)
    if any(":" in o.split("=", 1)[0] for o in items):
        raise ValueError("these overrides apply to the params files named here: no FILE: part")
    return items


Overrides = Annotated[list[str], AfterValidator(_check_overrides)]


# The choices of the pipeline's run form, read from the checkout that holds these flows when the
# module loads (so `prefect deploy` puts the current zoo, sources and presets into the form).
PROJECT_DIR = Path(__file__).resolve().parents[1]


def family_names() -> tuple[str, ...]:
    """The zoo: every registered GAN family (``ganops families``)."""
    from gan_models.families import FAMILIES

    return tuple(sorted(FAMILIES))


def source_names() -> tuple[str, ...]:
    """Data sources the pipeline's fetch stage can run: those that need no ``--path`` folder."""
    from gan_models.data.sources import SOURCES

    return tuple(name for name, src in SOURCES.items() if src.path != "required")


def preset_names(params_dir: str | Path = PROJECT_DIR / "params") -> tuple[str, ...]:
    """The preset files ``params/FAMILY-DATASET-SIZE.yaml``, by name (file stem)."""
    from gan_models.training.params import find_presets

    if not Path(params_dir).is_dir():  # flows installed away from a checkout: no presets here
        return ()
    found = find_presets(params_dir)
    return tuple(sorted(Path(path).stem for presets in found.values() for path, _ in presets))


def _choice(names: tuple[str, ...]) -> Any:
    """Literal[names] (a select in Prefect's form); a plain string if there is nothing to list."""
    return Literal[names] if names else str  # type: ignore[valid-type]


FamilyName = _choice(family_names())
SourceName = _choice(source_names())
PresetName = _choice(preset_names())
DatasetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
# The common training knobs, as numbers with bounds (number inputs in Prefect's form).
Steps = Annotated[int, Field(ge=1, le=1_000_000)]
BatchSize = Annotated[int, Field(ge=1, le=4096)]
LearningRate = Annotated[float, Field(gt=0, le=1)]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]


def form_choice(kind: Any) -> Any:
    """``kind | None`` (a Literal or bool) drawn as one select in Prefect's run form.

    Prefect's form draws ``X | None`` as a "X / None" type switch; a schema that lists the
    choices and null (``{"enum": [..., null]}``) is drawn as a select whose blank entry is
    None, the default ("keep what the params files say").
    """
    choices = list(typing.get_args(kind)) if kind is not bool else [True, False]
    return Annotated[Optional[kind], WithJsonSchema({"enum": [*choices, None]})]  # noqa: UP045


class PipelineParams(FlowParams):
    """What one pipeline run trains: written into the params files the DVC stages read.

    The ``pipeline`` flow takes the same fields as top-level parameters (its run form). Empty
    (None) keeps what the params files say.
    """

    family: FamilyName | None = Field(
        None, description="GAN family (model.family), see `ganops families`; empty = keep"
    )
    preset: PresetName | None = Field(
        None,
        description="preset params/NAME.yaml whose data/model/loss/train sections become the "
        "training stage's (its family must agree with `family`); empty = keep params/train.yaml",
    )
    source: SourceName | None = Field(
        None, description="data source (fetch.source), see `ganops data sources`; empty = keep"
    )
    dataset: DatasetName | None = Field(
        None,
        description="dataset name (fetch.name): data/raw/NAME, data/processed/NAME; "
        "empty = the source's name if a source is given, else keep params/data.yaml's",
    )
    steps: Steps | None = Field(None, description="training steps (train.steps); empty = keep")
    batch_size: BatchSize | None = Field(
        None, description="batch size (train.batch_size); empty = keep"
    )
    lr: LearningRate | None = Field(
        None, description="generator learning rate (train.lr); empty = keep"
    )
    seed: Seed | None = Field(None, description="training seed (train.seed); empty = keep")
    tune: bool | None = Field(
        None,
        description="run the hyperparameter search (DVC stage `tune`) before training; sets "
        "tune.enabled in params/tune.yaml; empty = keep the file's",
    )
    overrides: Overrides = Field(
        default_factory=list,
        description="[params/FILE.yaml:]section.key=value, applied last (as `dvc exp run -S`)",
    )
    refresh_data: bool = Field(
        False,
        description="re-run the fetch stage even if DVC thinks it is up to date (picks up a "
        "changed source); later stages re-run only if the data changed",
    )
    project_dir: str = Field(".", description="the ganops checkout holding dvc.yaml")

    def knobs(self) -> dict[str, Any]:
        """The training knobs given, as train-section keys: {"train.steps": 40, ...}."""
        given = {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr}
        given["seed"] = self.seed
        return {f"train.{k}": v for k, v in given.items() if v is not None}


class RetrainParams(FlowParams):
    """The scheduled retrain: the pipeline on the current params and the current data."""

    project_dir: str = Field(".", description="the ganops checkout holding dvc.yaml")


class TrialOf(FlowParams):
    """The Optuna trial a train-trial run trains (set by ``ganops tune`` with a work pool)."""

    tune_params: str = Field("params/tune.yaml", description="the study's params file")
    overrides: list[str] = Field(default_factory=list, description="the study's --set items")
    study: str = Field(..., description="study name")
    storage: str = Field(..., description="Optuna RDB URL the controller and trials share")
    trial: int = Field(..., ge=0, description="trial number (already asked by the controller)")
    parent_run: str | None = Field(None, description="the study's MLflow run")
    track: bool = True
    tracking_uri: str | None = None

    def args(self, params: str) -> list[str]:
        """``ganops tune`` arguments that run this one trial."""
        from gan_models.tuning.inputs import trial_command

        return trial_command(
            params,
            self.tune_params,
            self.overrides,
            self.study,
            self.storage,
            self.trial,
            self.parent_run,
            self.track,
            self.tracking_uri,
        )


class TrainTrialParams(FlowParams):
    """One training job on one GPU: ``ganops train PARAMS``, or one trial of a tuning study."""

    params: str = Field(
        "params/train.yaml", description="params file, e.g. params/dcgan-mnist5k-small.yaml"
    )
    overrides: Overrides = Field(
        default_factory=list, description="section.key=value on top of the params file"
    )
    run_dir: str | None = Field(
        None, description="run folder; an unfinished run there is resumed (not for a trial)"
    )
    trial_of: TrialOf | None = Field(
        None, description="train this trial of a study instead (its run folder is the study's)"
    )
    project_dir: str = Field(".", description="the ganops checkout (working directory)")

    @field_validator("overrides")
    @classmethod
    def _overrides_ok(cls, v: list[str]) -> list[str]:
        return _no_file_part(v)

    @model_validator(mode="after")
    def _job_or_trial(self) -> TrainTrialParams:
        if (self.run_dir is None) == (self.trial_of is None):
            raise ValueError("give run_dir (a training job) or trial_of (a tuning trial)")
        return self


class TuneFlowParams(FlowParams):
    """A hyperparameter search: ``ganops tune PARAMS`` with params/tune.yaml's study."""

    params: str = Field("params/train.yaml", description="training params the trials start from")
    tune_params: str = Field("params/tune.yaml", description="the study (section `tune`)")
    trials: int | None = Field(None, ge=1, description="finished trials to reach; empty = file's")
    workers: int | None = Field(None, ge=1, description="trials at once; empty = the file's")
    pool: str | None = Field(
        None, description="work pool for the trials (e.g. gpu); empty = tune.pool of the file"
    )
    study: str | None = Field(None, description="study name; empty = the file's (or derived)")
    overrides: list[str] = Field(
        default_factory=list,
        description="tune.key=value (params/tune.yaml) or section.key=value (training params)",
    )
    out: str = Field("params/best.yaml", description="where the best trial's params go")
    project_dir: str = Field(".", description="the ganops checkout (working directory)")

    def args(self) -> list[str]:
        args = ["tune", self.params, "--tune-params", self.tune_params, "--out", self.out]
        for name in ("trials", "workers", "pool", "study"):
            value = getattr(self, name)
            if value is not None:
                args += [f"--{name}", str(value)]
        for item in self.overrides:
            args += ["--set", item]
        return args

    @field_validator("overrides")
    @classmethod
    def _overrides_ok(cls, v: list[str]) -> list[str]:
        return _no_file_part(v)


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


class AugmentFlowParams(FlowParams):
    """The GAN data-augmentation experiment (``ganops augment``)."""

    params: str = Field("params/augment.yaml", description="the experiment's params file")
    arms: list[str] = Field(
        default_factory=list, description="run only these arms (real always runs); empty = all"
    )
    overrides: Annotated[list[str], AfterValidator(_no_file_part)] = Field(
        default_factory=list, description="augment.key=value, e.g. augment.k=[10, 50]"
    )
    project_dir: str = Field(".", description="the ganops checkout (working directory)")
