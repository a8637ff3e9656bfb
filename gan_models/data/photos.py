"""Colour photos shipped inside installed wheels, cut into crops for super-resolution.

scikit-image's wheel carries seven colour photos that load offline (astronaut, chelsea, coffee,
rocket, hubble_deep_field, retina, immunohistochemistry) and scikit-learn's two more
(``load_sample_images``: china, flower). Left out: the skimage images that download on first
use through pooch (brain, cells3d, eagle, kidney, lily, skin, ...: they fail offline), the
graphics (``colorwheel``, the RGBA ``logo``) and ``stereo_motorcycle`` (its docstring states no
licence). Each file is read from its package by name and checked against the sha256 kept here
(scikit-image 0.26.0, scikit-learn 1.9.1); licences are quoted from the packages (skimage's
loader docstrings, sklearn's ``datasets/images/README.txt``).

Crops, by stated rules, at ``size`` pixels (``--image-size``, default 64):

- each photo is tiled by a grid of non-overlapping ``size`` x ``size`` squares, the grid shifted
  by a seeded offset within the photo's leftover margin (``H mod size``, ``W mod size``);
- flat tiles (pixel standard deviation below 4 of 255: the black corners of retina) are dropped,
  having nothing to super-resolve;
- a photo with more than 128 tiles keeps 128, chosen by the same seeded generator, so that no
  photo dominates (hubble_deep_field and retina would); a photo smaller than ``size`` gives none.

Labels are the photo's index in :data:`PHOTOS` (class names are the photos); ``file_names``
names each crop's photo and box, ``skimage.data/astronaut.png[64:128,0:64]`` (rows, columns),
and preprocess carries it into each split. Held-out crops never share a pixel with training crops
(tiles do not overlap), but preprocess's stratified split draws each photo's crops into every
split; holding whole photos out needs a split by photo (the labels give the groups).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata, resources
from typing import Any

import numpy as np
from PIL import Image

from gan_models.data.loaded import Loaded
from gan_models.errors import DataError
from gan_models.utils.io import sha256_file

DEFAULT_SIZE = 64
SEED = 0
MIN_STD = 4.0  # of 0..255: flatter tiles are dropped
MAX_PER_PHOTO = 128


@dataclass(frozen=True)
class Photo:
    """A photo shipped in a wheel: its package resource, pinned sha256 and licence as stated."""

    name: str
    package: str  # the distribution (for its version)
    resource: str  # the importable package holding the file
    file: str
    sha256: str
    licence: str


_SKIMAGE, _SKLEARN = "scikit-image", "scikit-learn"
_SK_CC = (
    "Released under a creative commons license. [https://creativecommons.org/licenses/by/2.0/] "
    "Attribution: Some rights reserved by danielbuechele"
)
PHOTOS: tuple[Photo, ...] = (
    Photo(
        "astronaut",
        _SKIMAGE,
        "skimage.data",
        "astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        "No known copyright restrictions, released into the public domain. (NASA Great Images "
        "database, https://flic.kr/p/r9qvLn)",
    ),
    Photo(
        "chelsea",
        _SKIMAGE,
        "skimage.data",
        "chelsea.png",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        "No copyright restrictions.  CC0 by the photographer (Stefan van der Walt).",
    ),
    Photo(
        "coffee",
        _SKIMAGE,
        "skimage.data",
        "coffee.png",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        "No copyright restrictions.  CC0 by the photographer (Rachel Michetti).",
    ),
    Photo(
        "rocket",
        _SKIMAGE,
        "skimage.data",
        "rocket.jpg",
        "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
        "The image was captured by SpaceX and released in the public domain "
        "(https://www.flickr.com/photos/spacexphotos/16511594820/).",
    ),
    Photo(
        "hubble_deep_field",
        _SKIMAGE,
        "skimage.data",
        "hubble_deep_field.jpg",
        "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
        "The image was captured by NASA and may be freely used in the public domain.",
    ),
    Photo(
        "retina",
        _SKIMAGE,
        "skimage.data",
        "retina.jpg",
        "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
        "This file is made available under the Creative Commons CC0 1.0 Universal Public "
        "Domain Dedication. (Häggström, Mikael (2014), wikimedia)",
    ),
    Photo(
        "immunohistochemistry",
        _SKIMAGE,
        "skimage.data",
        "ihc.png",
        "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
        "No known copyright restrictions. (Center for Microscopy And Molecular Imaging, CMMI)",
    ),
    Photo(
        "china",
        _SKLEARN,
        "sklearn.datasets.images",
        "china.jpg",
        "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
        _SK_CC + " (https://www.flickr.com/photos/danielbuechele/)",
    ),
    Photo(
        "flower",
        _SKLEARN,
        "sklearn.datasets.images",
        "flower.jpg",
        "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638",
        # sklearn's README names danielbuechele here too, with vultilion's photo page.
        _SK_CC + " (https://www.flickr.com/photos/vultilion/6056698931/)",
    ),
)
LICENCE_LINE = (
    "skimage photos: public domain / CC0 (as skimage.data states); sklearn's china, flower: "
    "CC-BY-2.0"
)


def read_photo(photo: Photo) -> tuple[np.ndarray, dict[str, Any]]:
    """The photo as uint8 (H, W, 3), checked against its pinned sha256, and its lineage."""
    where = f"{photo.resource}/{photo.file}"
    try:
        ref = resources.files(photo.resource).joinpath(photo.file)
        with resources.as_file(ref) as p:
            if not p.is_file():
                raise FileNotFoundError(p)
            got = sha256_file(p)
            if got != photo.sha256:
                raise DataError(
                    f"{p}: sha256 {got} does not match the pinned {photo.sha256} of {where} "
                    f"({photo.package} {metadata.version(photo.package)} installed; the pins "
                    "are scikit-image 0.26.0 and scikit-learn 1.9.1, see constraints.txt)"
                )
            with Image.open(p) as im:
                rgb = np.asarray(im.convert("RGB"))  # (H, W, 3)
    except (ModuleNotFoundError, FileNotFoundError):
        raise DataError(
            f"{where} is not installed; install {photo.package} (pip install -c constraints.txt "
            f"{photo.package}) to use the photos source"
        ) from None
    origin = {
        "name": photo.name,
        "file": where,
        "package": photo.package,
        "version": metadata.version(photo.package),
        "sha256": got,
        "shape": list(rgb.shape),
        "licence": photo.licence,
    }
    return rgb, origin


def tiles(shape: tuple[int, ...], size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the non-overlapping size x size grid, shifted by a seeded
    offset within the leftover margin; row-major."""
    h, w = shape[:2]
    if h < size or w < size:
        return []
    oy = int(rng.integers(0, h % size + 1))
    ox = int(rng.integers(0, w % size + 1))
    return [(y, x) for y in range(oy, h - size + 1, size) for x in range(ox, w - size + 1, size)]


def load_photos(size: int | None = None) -> Loaded:
    """Crops of every photo in :data:`PHOTOS` by the module's rules: (N, 3, size, size) uint8,
    labelled by photo."""
    size = DEFAULT_SIZE if size is None else size
    rng = np.random.default_rng(SEED)
    crops, labels, names, per_photo, lineage = [], [], [], {}, []
    for k, photo in enumerate(PHOTOS):
        rgb, origin = read_photo(photo)
        corners = [
            (y, x)
            for y, x in tiles(rgb.shape, size, rng)
            if rgb[y : y + size, x : x + size].std() >= MIN_STD
        ]
        if len(corners) > MAX_PER_PHOTO:
            keep = np.sort(rng.choice(len(corners), MAX_PER_PHOTO, replace=False))
            corners = [corners[i] for i in keep]
        for y, x in corners:
            crops.append(rgb[y : y + size, x : x + size].transpose(2, 0, 1))  # (3, S, S)
            labels.append(k)
            names.append(f"{photo.resource}/{photo.file}[{y}:{y + size},{x}:{x + size}]")
        per_photo[photo.name] = len(corners)
        lineage.append({**origin, "crops": len(corners)})
    if not crops:
        raise DataError(
            f"--image-size {size} is larger than every photo (the smallest is 300 pixels "
            "high); use a smaller size"
        )
    return Loaded(
        arrays={"images": np.stack(crops)},  # (N, 3, S, S)
        labels=np.asarray(labels, dtype=np.int64),
        class_names=[p.name for p in PHOTOS],
        origin={
            "photos": lineage,
            "crop_size": size,
            "crop_rule": "per photo: a non-overlapping grid shifted by a seeded offset within "
            f"the leftover margin; tiles with pixel std < {MIN_STD:g} dropped; at most "
            f"{MAX_PER_PHOTO} tiles per photo, chosen by the same generator",
            "seed": SEED,
            "crops_per_photo": per_photo,
        },
        meta={
            "licence": {p.name: p.licence for p in PHOTOS},
            "file_names": names,
        },
    )
