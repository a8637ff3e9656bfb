"""Typed params for the ``features`` and ``evaluate`` stages (params/features.yaml, evaluate.yaml).

Built on :mod:`gan_models.config`: unknown keys and wrong types are rejected with the file and the
key's name, and ``--set evaluate.n_samples=1000`` style overrides apply. ``EvaluateParams`` field
names are the keyword arguments of :func:`gan_models.metrics.evaluate.evaluate_generator`, so
``evaluate_generator(gen, ..., **params.evaluate_kwargs())`` passes them all.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field

from gan_models.config import Section, load_section


class DomainClassifierParams(Section):
    """Training of the domain classifier (small CNN on the labelled real training split)."""

    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    seed: int = 0
    width: int = Field(16, ge=1)
    hidden: int = Field(128, ge=2)


class InceptionParams(Section):
    """FID-standard InceptionV3; ``weights`` null means env / hub cache / download."""

    weights: str | None = None
    resize: Literal["bilinear", "pil-bicubic"] = "bilinear"
    download: bool = True


class FeaturesParams(Section):
    """Which extractor the metrics use, and how it runs."""

    extractor: Literal["domain", "inception"] = "domain"
    device: str = "cpu"
    batch_size: int = Field(256, ge=1)
    domain: DomainClassifierParams = Field(default_factory=DomainClassifierParams)
    inception: InceptionParams = Field(default_factory=InceptionParams)


class EvaluateParams(Section):
    """Sample counts, seeds and metric settings of an evaluation."""

    n_samples: int = Field(5000, ge=2)
    seed: int = 0
    fid_bootstrap: int = Field(100, ge=2)
    kid_subsets: int = Field(100, ge=1)
    kid_subset_size: int = Field(1000, ge=2)
    kid_seed: int = 2020
    is_splits: int = Field(10, ge=1)
    pr_k: int = Field(3, ge=1)
    dc_k: int = Field(5, ge=1)
    cas: bool = True
    cas_epochs: int = Field(8, ge=1)
    memorization_samples: int = Field(1000, ge=1)
    max_reference_features: int = Field(10000, ge=2)
    cache_dir: str | None = None
    grid_nrow: int = Field(8, ge=1)

    def evaluate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``evaluate_generator`` (``grid_nrow`` is for the figures)."""
        return self.model_dump(exclude={"grid_nrow"})


def load_features_params(
    path: str | os.PathLike, overrides: list[str] | None = None
) -> FeaturesParams:
    """Read the ``features:`` section of a params file (with ``features.key=value`` overrides)."""
    return load_section(path, "features", FeaturesParams, overrides)


def load_evaluate_params(
    path: str | os.PathLike, overrides: list[str] | None = None
) -> EvaluateParams:
    """Read the ``evaluate:`` section of a params file (with ``evaluate.key=value`` overrides)."""
    return load_section(path, "evaluate", EvaluateParams, overrides)
