"""Datasets: sources that fetch raw image sets, and the one on-disk format they are written in."""

from gan_models.data.format import ImageSet, read_imageset, read_meta, write_imageset
from gan_models.data.sources import SOURCES, Source, fetch, get_source

__all__ = [
    "SOURCES",
    "ImageSet",
    "Source",
    "fetch",
    "get_source",
    "read_imageset",
    "read_meta",
    "write_imageset",
]
