"""Typed configuration: ``params/*.yaml`` into pydantic models that reject unknown keys and wrong types.

A params file may name another with ``extends: other.yaml`` (resolved relative to the file); its
sections are merged under this file's. ``--set section.key=value`` overrides go on top, with the
value parsed as YAML (``1e-4``, ``true``, ``[0.5, 0.999]``). Every error names the file and the
dotted key. No override is ever dropped: one whose section or key the loaded model does not have
is an error naming it, raised before anything is merged (:func:`check_override_keys`).

The ``model`` and ``loss`` sections are shared by the families; each family declares the keys it
reads (``Family.reads``), and a key the chosen family does not read is refused when it is set to
anything but its default, so every entry point (CLI, DVC, flows, tuning) gets the same check.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


class ModelConfig(Section):
    """Network shapes. Families read the keys that apply to them."""

    family: str = "dcgan"
    latent_dim: int = Field(64, ge=1)
    width: int = Field(64, ge=1, description="base channels (conv) or hidden units (MLP)")
    depth: int = Field(3, ge=1, description="hidden layers of MLP families")
    spectral_norm: bool = False
    d_norm: Literal["batch", "layer", "none"] | None = Field(
        None, description="critic/discriminator normalisation; None = the family's default"
    )
    embed_dim: int = Field(16, ge=1, description="label embedding size of conditional families")
    res_blocks: int | None = Field(
        None,
        ge=0,
        description="residual blocks of the CycleGAN/SRGAN generators; None = the family's "
        "default (CycleGAN 6, SRGAN 16)",
    )
    scale: Literal[2, 4] = Field(4, description="SRGAN upscaling factor (sub-pixel x2 stages)")
    mapping_layers: int = Field(8, ge=1, description="StyleGAN mapping network depth (z -> w)")


class LossConfig(Section):
    """Adversarial objective and regularisers."""

    type: Literal["nonsaturating", "hinge", "wasserstein", "lsgan"] | None = Field(
        None, description="None = the family's default"
    )
    n_critic: int | None = Field(None, ge=1, description="D steps per G step; None = default")
    gp_weight: float = Field(10.0, ge=0, description="WGAN-GP gradient penalty weight")
    clip: float = Field(0.01, gt=0, description="WGAN weight clipping bound")
    r1_gamma: float = Field(0.0, ge=0, description="R1 penalty weight (0 = off)")
    r1_every: int = Field(16, ge=1, description="lazy R1 interval in D steps")
    cycle_weight: float = Field(10.0, ge=0, description="CycleGAN cycle-consistency (L1) weight")
    identity_weight: float = Field(
        0.5,
        ge=0,
        description="CycleGAN identity (L1) weight as a fraction of cycle_weight (0.5 -> 5)",
    )
    pool_size: int = Field(
        50, ge=0, description="CycleGAN history of generated images shown to D (0 = off)"
    )
    content: Literal["pixel", "ssim", "feature"] = Field(
        "pixel",
        description="SRGAN content loss: pixel MSE, pixel MSE + (1 - SSIM), or MSE on features "
        "of the domain classifier at content_network",
    )
    content_weight: float = Field(1.0, ge=0, description="SRGAN content loss weight")
    content_network: str | None = Field(
        None, description="domain classifier directory for loss.content=feature"
    )
    adv_weight: float | None = Field(
        None, ge=0, description="SRGAN adversarial weight; None = the family's default (1e-3)"
    )
    style_mixing: float = Field(
        0.9, ge=0, le=1, description="StyleGAN style-mixing regularisation probability"
    )


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


class TunedFrom(Section):
    """Where tuned params came from: the Optuna trial that ``ganops tune`` exported them from."""

    study: str
    trial: int
    storage: str
    values: dict[str, float] = Field(default_factory=dict, description="the trial's objectives")
    mlflow_run_id: str | None = Field(None, description="the trial's (nested) MLflow run")
    mlflow_parent_run_id: str | None = Field(None, description="the study's MLflow run")


class TrainParams(Section):
    """A training params file: what ``ganops train PARAMS`` reads."""

    name: str | None = Field(None, description="experiment name; default: the file's stem")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    tuned: TunedFrom | None = Field(
        None, description="set in params/best.yaml: the tuning trial these params come from"
    )

    @model_validator(mode="after")
    def _family_reads_its_keys(self) -> TrainParams:
        from gan_models.families import FAMILIES

        family = FAMILIES.get(self.model.family)
        if family is None:
            raise ValueError(
                f"model.family: unknown family {self.model.family!r}; "
                f"expected one of {sorted(FAMILIES)}"
            )
        for key, value, default in family.ignored_keys(self):
            raise ValueError(
                f"{key}: the {family.name} family does not read this key, so {value!r} would be "
                f"ignored; remove it (default {default!r}) or choose a family that reads it"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """A short hash of the resolved config (for lineage and run tags)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


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


def load_params(
    path: str | Path, model: type[M] = TrainParams, overrides: list[str] | None = None
) -> M:
    """Load a whole params file (with ``extends`` and ``--set`` overrides) into ``model``."""
    path = Path(path)
    check_override_keys(overrides, model)
    return _params_from_data(path, apply_overrides(_read_yaml(path), overrides), model)


def _params_from_data(path: Path, data: dict[str, Any], model: type[M]) -> M:
    if model is TrainParams and not data.get("name"):
        data["name"] = path.stem
    return validate_model(model, data, str(path))


def find_presets(params_dir: str | Path = "params") -> dict[str, list[tuple[str, TrainParams]]]:
    """Training presets by family: files ``FAMILY-*.yaml`` in ``params_dir`` whose
    ``model.family`` is FAMILY (so ``train.yaml`` and ``best.yaml`` are not presets)."""
    if not Path(params_dir).is_dir():
        raise ConfigError(f"{params_dir}: no such folder (expected the folder of the params files)")
    out: dict[str, list[tuple[str, TrainParams]]] = {}
    for path in sorted(Path(params_dir).glob("*.yaml")):
        data = read_params_yaml(path)
        family = (data.get("model") or {}).get("family")
        if isinstance(family, str) and path.stem.startswith(f"{family}-"):
            out.setdefault(family, []).append(
                (str(path), _params_from_data(path, data, TrainParams))
            )
    return out


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
