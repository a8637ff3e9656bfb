"""The GAN zoo: one file per family, registered here under its name."""

from __future__ import annotations

from gan_models.errors import ConfigError
from gan_models.families import cgan, cyclegan, dcgan, srgan, stylegan, vanilla, wgan, wgan_gp
from gan_models.families.base import DataSpec, Family, Phase, StepContext

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        vanilla.FAMILY,
        dcgan.FAMILY,
        cgan.FAMILY,
        wgan.FAMILY,
        wgan_gp.FAMILY,
        cyclegan.FAMILY,
        srgan.FAMILY,
        stylegan.FAMILY,
    )
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(
            f"model.family: unknown family {name!r}; expected one of {sorted(FAMILIES)}"
        ) from None


__all__ = ["FAMILIES", "DataSpec", "Family", "Phase", "StepContext", "get_family"]
