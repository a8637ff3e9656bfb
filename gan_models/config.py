"""Typed configuration: ``params/*.yaml`` into pydantic models that reject unknown keys and wrong types.

A params file may name another with ``extends: other.yaml`` (resolved relative to the file); its
sections are merged under this file's. ``--set section.key=value`` overrides go on top, with the
value parsed as YAML (``1e-4``, ``true``, ``[0.5, 0.999]``). Every error names the file and the
dotted key. No override is ever dropped: one whose section or key the loaded model does not have
is an error naming it, raised before anything is merged (:func:`check_override_keys`).

The ``model`` and ``loss`` sections hold the keys several families share; a family's own keys
live in its options model and are checked with the training params
(:mod:`gan_models.training.params`), so every entry point (CLI, DVC, flows, tuning) gets the same
check.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from gan_models.errors import ConfigError


class Section(BaseModel):
    """Base for every params section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Which dataset the trainer reads and how it is shaped for the model."""

    path: str = Field("data/raw/mnist5k", description="dataset directory (raw or processed)")
    split: str | None = Field(None, description="sub-folder of a processed dataset, e.g. train")
    image_size: int = Field(32, ge=4, description="square side the images are resized to")
    cache_mb: float | None = Field(
        None,
        ge=0,
        description="a split whose arrays fit in this many MB is read into memory whole, a "
        "larger one is streamed from disk; None = an eighth of the RAM, at most 1024; 0 = stream",
    )
    prefetch: int = Field(2, ge=0, description="batches read ahead by a thread (0 = none)")


SHARED_SECTIONS = ("model", "loss")  # the sections the families share (see SharedSection)


class SharedSection(Section):
    """A section the families share (``model``, ``loss``): the keys here are read by several
    families; a family's own keys (``loss.cycle_weight``) are declared by the family's options
    model and checked against it when the training params load, so the section accepts them
    here and leaves the check to :class:`~gan_models.training.params.TrainParams`."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)


class ModelConfig(SharedSection):
    """Network shapes shared by the zoo; each family adds its own keys (``ganops families``)."""

    family: str = "dcgan"
    latent_dim: int = Field(64, ge=1)
    width: int = Field(64, ge=1, description="base channels (conv) or hidden units (MLP)")
    spectral_norm: bool = False
    d_norm: Literal["batch", "layer", "none"] | None = Field(
        None, description="critic/discriminator normalisation; None = the family's default"
    )


class LossConfig(SharedSection):
    """Adversarial objective and regularisers shared by the zoo; each family adds its own keys."""

    type: Literal["nonsaturating", "hinge", "wasserstein", "lsgan"] | None = Field(
        None, description="None = the family's default"
    )
    n_critic: int | None = Field(None, ge=1, description="D steps per G step; None = default")
    r1_gamma: float = Field(0.0, ge=0, description="R1 penalty weight (0 = off)")
    r1_every: int = Field(16, ge=1, description="lazy R1 interval in D steps")


class TrainConfig(Section):
    """The training loop. The run length is ``steps`` generator updates."""

    steps: int = Field(2000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-4, gt=0, description="generator learning rate")
    lr_d: float | None = Field(None, gt=0, description="discriminator learning rate; None = lr")
    optimizer: Literal["adam", "rmsprop"] = "adam"
    betas: tuple[float, float] = (0.5, 0.999)
    ema_decay: float | None = Field(0.999, ge=0, lt=1, description="generator EMA; None = off")
    ema_start: int = Field(0, ge=0, description="step after which the EMA starts averaging")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    profile: Literal["exact", "fast"] = Field(
        "exact",
        description="exact: fp32, bit-exact resume on CPU; fast: what pays on the device "
        "(channels_last and no deterministic mode on CPU; bf16, TF32, cudnn.benchmark and "
        "fused Adam on CUDA)",
    )
    deterministic: bool | None = Field(None, description="None = on for CPU, off for GPU")
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(50, ge=1, description="steps between stats.jsonl records")
    sample_every: int = Field(0, ge=0, description="steps between sample grids (0 = end only)")
    progress: bool = True
    fid_every: int = Field(0, ge=0, description="steps between FIDs during training (0 = off)")
    fid_samples: int = Field(1000, ge=2, description="generated samples per training-time FID")
    fid_features: str | None = Field(
        None, description="domain classifier folder; None = models/features/<dataset>"
    )
    augment: list[Literal["color", "translation", "cutout"]] = Field(
        default_factory=list,
        description="DiffAugment (Zhao et al. 2020) of everything the discriminator sees, real "
        "and fake: ops of color, translation, cutout, e.g. color,translation,cutout ([] = off)",
    )
    augment_p: float = Field(
        1.0, ge=0, le=1, description="probability of each augmentation op per image"
    )

    @field_validator("augment", mode="before")
    @classmethod
    def _policy_from_string(cls, value: Any) -> Any:
        # "color,translation,cutout" as DiffAugment writes a policy; "" or null: off
        if value is None:
            return []
        if isinstance(value, str):
            return [op.strip() for op in value.split(",") if op.strip()]
        return value

    @field_validator("augment")
    @classmethod
    def _ops_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) < len(value):
            raise PydanticCustomError("repeated_op", "an op is listed twice")
        return value

    @field_validator("augment_p")
    @classmethod
    def _p_needs_augment(cls, value: float, info: ValidationInfo) -> float:
        if value != 1.0 and not info.data.get("augment", True):
            raise PydanticCustomError(
                "ignored_key",
                "would be ignored with train.augment off; set train.augment (color, "
                "translation, cutout) or remove it",
            )
        return value

    @model_serializer(mode="wrap")
    def _leave_out_augment_when_off(self, handler: Any) -> dict[str, Any]:
        # Off, the augmentation keys are left out of the resolved config, so the config.yaml,
        # params hash and study names of runs without it are those from before it existed.
        data = handler(self)
        if not self.augment:
            data.pop("augment", None)
            data.pop("augment_p", None)
        return data


class TunedFrom(Section):
    """Where tuned params came from: the Optuna trial that ``ganops tune`` exported them from."""

    study: str
    trial: int
    storage: str
    values: dict[str, float] = Field(default_factory=dict, description="the trial's objectives")
    mlflow_run_id: str | None = Field(None, description="the trial's (nested) MLflow run")
    mlflow_parent_run_id: str | None = Field(None, description="the study's MLflow run")


M = TypeVar("M", bound=BaseModel)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    base = _read_yaml(path.parent / str(base_name), (*seen, path.resolve()))
    return _deep_merge(base, data)


def read_params_yaml(path: str | Path) -> dict[str, Any]:
    """A params file as plain data, with ``extends`` resolved (no validation)."""
    return _read_yaml(Path(path))


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def parse_overrides(overrides: list[str] | tuple[str, ...] | None) -> list[tuple[list[str], Any]]:
    """``["train.lr=1e-4"]`` -> ``[(["train", "lr"], 0.0001)]``; values are parsed as YAML."""
    parsed = []
    for item in overrides or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip().split("."), value))
    return parsed


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The params model an annotation holds (``Section`` or ``Section | None``), else None."""
    for t in (annotation, *get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _is_mapping(annotation: Any) -> bool:
    """Whether a field holds free keys (``dict[str, ...]``, e.g. tune.space)."""
    return any(t is dict or get_origin(t) is dict for t in (annotation, *get_args(annotation)))


def check_override_keys(
    overrides: list[str] | tuple[str, ...] | None,
    model: type[BaseModel] | Mapping[str, type[BaseModel]],
) -> None:
    """Every ``--set`` key must name a section and key of ``model`` (a params model, or the
    sections a command reads, ``{"evaluate": EvaluateParams, ...}``); the first that does not
    raises ConfigError naming it, with the keys expected there."""
    for item in overrides or ():
        key = item.partition("=")[0].strip()
        parts = key.split(".")
        fields: dict[str, Any] = (
            dict(model)
            if isinstance(model, Mapping)
            else {k: f.annotation for k, f in model.model_fields.items()}
        )
        for i, part in enumerate(parts):
            if part not in fields:
                what = "section" if i == 0 else f"key in {'.'.join(parts[:i])}"
                close = difflib.get_close_matches(part, list(fields), 1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"--set {item}: unknown {what}: {part!r}{hint}; expected one of "
                    f"{sorted(fields)}"
                )
            sub = _model_in(fields[part])
            if _is_mapping(fields[part]):
                break  # free keys below (checked where they are used)
            elif sub is not None and sub.model_config.get("extra") == "allow":
                break  # a shared section: a family's own keys are checked by its options model
            elif sub is not None:
                fields = {k: f.annotation for k, f in sub.model_fields.items()}
            elif i < len(parts) - 1:
                raise ConfigError(
                    f"--set {item}: {'.'.join(parts[: i + 1])} is a value, not a section"
                )
            else:
                break


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...] | None) -> dict:
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for keys, value in parse_overrides(overrides):
        node = data
        for k in keys[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {'.'.join(keys)}: {k!r} is not a section")
            node = nxt
        node[keys[-1]] = value
    return data


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key")
        elif e["type"] == "value_error" and not e["loc"]:  # a model validator names its keys
            lines.append(e["msg"].removeprefix("Value error, "))
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"{loc}: {e['msg']}{shown}")
    return f"{source}: " + "; ".join(lines)


def validate_model(model: type[M], data: dict[str, Any], source: str) -> M:
    """Build ``model`` from plain data; errors name ``source`` and each offending key."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(source, e)) from None


def load_params(path: str | Path, model: type[M], overrides: list[str] | None = None) -> M:
    """Load a whole params file (with ``extends`` and ``--set`` overrides) into ``model``."""
    path = Path(path)
    check_override_keys(overrides, model)
    return params_from_data(path, apply_overrides(_read_yaml(path), overrides), model)


def params_from_data(path: Path, data: dict[str, Any], model: type[M]) -> M:
    if getattr(model, "named_after_file", False) and not data.get("name"):
        data["name"] = path.stem
    return validate_model(model, data, str(path))


def load_section(
    path: str | Path, section: str, model: type[M], overrides: list[str] | None = None
) -> M:
    """Load one section of a params file (e.g. ``evaluate`` of params/evaluate.yaml).

    Overrides are given with the section prefix, as DVC and the CLI write them
    (``evaluate.n_samples=1000``); an override of another section, or of a key the section does
    not have, is a ConfigError naming it (a command that reads several sections checks them all
    with :func:`check_override_keys` and passes each its own).
    """
    path = Path(path)
    check_override_keys(overrides, {section: model})
    data = apply_overrides(_read_yaml(path), overrides)
    if section not in data:
        raise ConfigError(f"{path}: missing section {section!r}")
    return validate_model(model, data[section] or {}, f"{path} [{section}]")


def dump_yaml(obj: BaseModel | dict[str, Any]) -> str:
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    return yaml.safe_dump(data, sort_keys=False)
