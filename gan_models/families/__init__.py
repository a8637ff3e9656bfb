"""The GAN zoo: one file per family, registered here under its name.

A new family is one file that builds a :class:`Family` and passes it to :func:`register_family`
(the built-in ones are registered below); from then on every entry point (params files, the
trainer, sampling, evaluation, the model registry, ``ganops families``) knows it by its name.
"""

from __future__ import annotations

from gan_models.errors import ConfigError
from gan_models.families import cgan, cyclegan, dcgan, srgan, stylegan, vanilla, wgan, wgan_gp
from gan_models.families.base import DataSpec, Family, FamilyOptions, Phase, StepContext

FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add ``family`` to the zoo under ``family.name``; a second family of that name is refused."""
    if FAMILIES.get(family.name, family) is not family:
        raise ValueError(f"a family named {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


for _module in (vanilla, dcgan, cgan, wgan, wgan_gp, cyclegan, srgan, stylegan):
    register_family(_module.FAMILY)


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(
            f"model.family: unknown family {name!r}; expected one of {sorted(FAMILIES)}"
        ) from None


def option_owners(section: str, key: str) -> list[str]:
    """The families whose options model declares ``section.key`` (``loss``, ``cycle_weight``)."""
    return sorted(
        f.name
        for f in FAMILIES.values()
        if key in getattr(f.options.get(section), "model_fields", {})
    )


__all__ = [
    "FAMILIES",
    "DataSpec",
    "Family",
    "FamilyOptions",
    "Phase",
    "StepContext",
    "get_family",
    "option_owners",
    "register_family",
]
