"""``params/augment.yaml``: what the augmentation experiment runs, checked before anything trains.

Arms are named from a fixed set; ``synthetic`` and ``classical+synthetic`` expand into one arm
per ratio (synthetic images per real image), so ``arms: [real, synthetic]`` with ``ratios:
[1, 4]`` runs ``real``, ``synthetic-1x`` and ``synthetic-4x``. ``synthetic-only`` trains on the
largest ratio's synthetic images and no real ones (the classification accuracy score).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator, model_validator

from gan_models.config import Section, load_section
from gan_models.errors import ConfigError

ARM_KINDS: dict[str, tuple[bool, bool, bool]] = {
    # name: (real images, classical augmentation, synthetic images)
    "real": (True, False, False),
    "classical": (True, True, False),
    "synthetic": (True, False, True),
    "classical+synthetic": (True, True, True),
    "synthetic-only": (False, False, True),
}


@dataclass(frozen=True)
class Arm:
    """One way of building the classifier's training set."""

    name: str
    real: bool
    classical: bool
    ratio: float  # synthetic images per real image of the subset (0: none)

    def describe(self) -> str:
        if not self.real:
            return f"synthetic only, {_ratio(self.ratio)} per real image of the subset"
        parts = ["real"]
        if self.classical:
            parts.append("classical augmentation")
        if self.ratio:
            parts.append(f"synthetic {_ratio(self.ratio)}:1")
        return " + ".join(parts)


def _ratio(r: float) -> str:
    return f"{r:g}"


class ClassicalParams(Section):
    """Classical augmentation of the classifier's batches (per image, seeded)."""

    crop: int = Field(2, ge=0, description="random crop after padding by this many pixels")
    flip: bool = Field(False, description="horizontal flips (off for digits and text)")
    rotate: float = Field(10.0, ge=0, le=180, description="rotation range, +/- degrees")
    scale: float = Field(0.1, ge=0, lt=1, description="zoom range, 1 +/- this")


class ClassifierParams(Section):
    """The downstream classifier: a small CNN, trained for the same steps in every arm."""

    steps: int = Field(400, ge=1, description="optimiser steps, equal for every arm")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    width: int = Field(8, ge=1, description="channels of the first conv layer")
    hidden: int = Field(128, ge=2)
    dropout: float = Field(0.5, ge=0, lt=1)


class GeneratorParams(Section):
    """The conditional generator trained on each subset."""

    params: str = Field("params/cgan-mnist5k-small.yaml", description="training params file")
    set: list[str] = Field(default_factory=list, description="overrides, section.key=value")
    n_samples: int = Field(1000, ge=2, description="samples its evaluation scores")
    register_model: bool = Field(True, description="register each generator in the model registry")


class AugmentParams(Section):
    """The experiment: data, low-data regime, arms, seeds and the models it trains."""

    data: str = Field("data/processed/mnist5k", description="labelled processed dataset")
    features_dir: str | None = Field(
        None, description="domain classifier for the generators' FID; default models/features/NAME"
    )
    k: list[int] = Field(default_factory=lambda: [10, 50, 200], description="images per class")
    subset_seed: int = 0
    seeds: int = Field(5, ge=2, description="classifier seeds per arm and k")
    arms: list[str] = Field(
        default_factory=lambda: [
            "real",
            "classical",
            "synthetic",
            "classical+synthetic",
            "synthetic-only",
        ]
    )
    ratios: list[float] = Field(default_factory=lambda: [1.0, 4.0])
    classical: ClassicalParams = Field(default_factory=ClassicalParams)
    classifier: ClassifierParams = Field(default_factory=ClassifierParams)
    generator: GeneratorParams = Field(default_factory=GeneratorParams)
    workers: int | None = Field(
        None, ge=1, description="classifier processes at once; null: one per CPU core (max 8)"
    )
    experiment: str = Field("ganops-augment", description="MLflow experiment")
    out: str = Field("reports/augment", description="table, plot, metrics (per dataset folder)")
    runs: str = Field("runs/augment", description="subsets and generators (per dataset folder)")

    @field_validator("k")
    @classmethod
    def _k(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError(f"expected distinct positive images per class, got {v}")
        return sorted(v)

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if not v or any(r <= 0 for r in v) or len(set(v)) != len(v):
            raise ValueError(f"expected distinct positive ratios, got {v}")
        return sorted(v)

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: list[str]) -> list[str]:
        unknown = [a for a in v if a not in ARM_KINDS]
        if unknown:
            raise ValueError(f"unknown arm {unknown[0]!r}; expected some of {list(ARM_KINDS)}")
        if not v or len(set(v)) != len(v):
            raise ValueError(f"expected distinct arms, got {v}")
        return v

    @model_validator(mode="after")
    def _baseline(self) -> AugmentParams:
        if "real" not in self.arms:
            raise ValueError("arms must include 'real': every other arm is compared with it")
        return self

    def expanded_arms(self) -> list[Arm]:
        """Every arm the experiment trains, in the order the table shows them."""
        out: list[Arm] = []
        for name in self.arms:
            real, classical, synthetic = ARM_KINDS[name]
            if not synthetic:
                out.append(Arm(name, real, classical, 0.0))
            elif not real:
                out.append(Arm(name, real, classical, max(self.ratios)))
            else:
                out += [Arm(f"{name}-{_ratio(r)}x", real, classical, r) for r in self.ratios]
        return out

    def needs_generator(self) -> bool:
        return any(ARM_KINDS[a][2] for a in self.arms)


def load_augment_params(
    path: str | os.PathLike, overrides: list[str] | None = None
) -> AugmentParams:
    """Read the ``augment:`` section (with ``augment.key=value`` overrides)."""
    return load_section(path, "augment", AugmentParams, overrides)


def select_arms(params: AugmentParams, names: list[str] | None) -> AugmentParams:
    """``params`` restricted to the arms ``names`` (``--arm``), 'real' always kept."""
    if not names:
        return params
    for n in names:
        if n not in ARM_KINDS:
            raise ConfigError(f"--arm: unknown arm {n!r}; expected one of {list(ARM_KINDS)}")
    keep = ["real", *[n for n in names if n != "real"]]
    return params.model_copy(update={"arms": keep})


def as_dict(params: AugmentParams) -> dict[str, Any]:
    return params.model_dump(mode="json")
