"""Emoji artwork from the npm packages of iamcal's emoji-data: Twemoji and Noto, 64x64 colour.

``emoji-datasource-twitter`` and ``emoji-datasource-google`` (both pinned at 16.0.0) share one
layout: ``package/emoji.json`` lists every emoji (``unified`` codepoint, ``category``,
``image`` file name, ``has_img_<vendor>``, ``skin_variations``, ``sort_order``) and
``package/img/<vendor>/64/`` holds its 64x64 PNG. The packages are fetched and checked by
:mod:`gan_models.data.npm`.

What is read, by stated rules:

- **Base emoji only**: one image per ``emoji.json`` entry; the skin-tone variants
  (``skin_variations``, 1,875 more images in 16.0.0) are left out, so each emoji counts once and
  no class is dominated by five recolourings of the same drawing.
- **Labels**: the entry's category, as an index into :data:`CATEGORIES` (Unicode's order). The
  ``Component`` category (the five skin-tone swatches U+1F3FB..U+1F3FF, modifiers rather than
  pictures) is left out: 1,906 of the 1,911 entries in 16.0.0.
- **Order**: by ``sort_order`` (Unicode's emoji order), then codepoint.
- **Pixels**: straight alpha composited onto white, ``(rgb * a + 255 * (255 - a) + 127) // 255``
  per channel; uint8 RGB (N, 3, 64, 64).
- **Codepoints**: ``meta.json`` keeps each image's ``unified`` codepoint under ``codepoints``,
  keyed by array (``{"images": [...]}``; the pair: ``{"a": [...], "b": [...]}``), and its file in
  the package under ``file_names`` (which preprocess carries into each split). The pair also
  records its ``pairing`` (:func:`pairing_record`); preprocess carries it and the pair's
  codepoints into each split, where :mod:`gan_models.data.pairing` finds the counterparts.

- **Duplicates**: an emoji whose composited drawing repeats an earlier one's, pixel for pixel,
  is left out (``origin["duplicates"]`` maps its codepoint to the kept one), so that no image
  sits in both a training and a held-out split. In 16.0.0 Twemoji repeats 33 drawings (family
  groups drawn gender-neutral, territories that share a flag), Noto 14: Twemoji gives 1,873
  images, Noto 1,892.

The pair ``twemoji-noto`` (:func:`load_pair`) takes the emoji both vendors draw, deals them per
category by a seeded permutation into two disjoint halves, and writes Twemoji's drawings of the
first half as ``a`` and Noto's drawings of the other half as ``b``. Its ``codepoints`` let
:func:`counterparts` fetch the other vendor's drawing of any image, for paired evaluation of an
unpaired translation. Rows of a preprocessed split ``s`` of domain ``k`` are
``split_indices(len(k), None, params)[s]`` of the raw domain (no labels in an unpaired set), so
their codepoints are ``meta["codepoints"][k][i]`` for those rows; :func:`split_codepoints`
does this.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from gan_models.data.loaded import Loaded
from gan_models.data.npm import (
    NpmPackage,
    PackageFiles,
    content_digest,
    find_local,
    npm_pack,
    open_tarball,
    open_unpacked,
)
from gan_models.errors import DataError

SIZE = 64
BACKGROUND = 255  # white, in every channel
# emoji.json's categories in Unicode's order (as the package's categories.json lists them).
CATEGORIES = (
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
    "Flags",
)
EXCLUDED_CATEGORIES = {"Component": "skin-tone swatches: modifiers, not pictures"}
PAIR_SEED = 0  # the permutation that deals the shared emoji into the pair's two halves


@dataclass(frozen=True)
class EmojiVendor:
    """One vendor's artwork: its npm package, image set name in emoji-data, and licence."""

    key: str
    artwork: str
    package: NpmPackage
    image_set: str  # `img/<image_set>/64/` and `has_img_<image_set>` in emoji.json
    licence: dict[str, str]

    @property
    def image_dir(self) -> str:
        return f"img/{self.image_set}/{SIZE}/"

    def licence_line(self) -> str:
        return f"{self.licence['spdx']}, {self.licence['attribution']} ({self.licence['url']})"


# Licence texts and URLs as the packages' README.md states them; emoji.json itself is MIT
# (package LICENSE: "Copyright (c) 2013 Cal Henderson").
_DATA_LICENCE = "emoji.json: MIT, Copyright (c) 2013 Cal Henderson (the package's LICENSE)"
VENDORS: dict[str, EmojiVendor] = {
    "twemoji": EmojiVendor(
        key="twemoji",
        artwork="Twemoji",
        package=NpmPackage(
            name="emoji-datasource-twitter",
            version="16.0.0",
            sha256="f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
            integrity="sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==",
            content_sha256="64ed27294e2dffb3e814f57d8c1584b5b38be9ef3d297b36ca121754d3796e06",
        ),
        image_set="twitter",
        licence={
            "spdx": "CC-BY-4.0",
            "name": "Creative Commons Attribution 4.0",
            "attribution": "Copyright 2020 Twitter, Inc and other contributors",
            "url": "https://github.com/jdecked/twemoji/blob/v15.0.2/LICENSE-GRAPHICS",
            "statement": "Twitter images are available under the Creative Commons "
            "Attribution 4.0 license",
            "data": _DATA_LICENCE,
        },
    ),
    "noto": EmojiVendor(
        key="noto",
        artwork="Noto Emoji",
        package=NpmPackage(
            name="emoji-datasource-google",
            version="16.0.0",
            sha256="fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
            integrity="sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
            content_sha256="9be08e5d4b67c883c8377b086938e260c0824e6332775e98577ba931a5c1b3a2",
        ),
        image_set="google",
        licence={
            "spdx": "Apache-2.0",
            "name": "Apache License 2.0",
            "attribution": "Noto Emoji artwork by Google",
            "url": "https://github.com/googlei18n/noto-emoji/blob/master/LICENSE",
            "statement": "Android/Google/Noto images, are available under the Apache License 2.0",
            "data": _DATA_LICENCE,
        },
    ),
}


@dataclass
class EmojiSet:
    """One vendor's base emoji, decoded: images (N, 3, 64, 64), labels, codepoints, files, and
    the codepoints left out as duplicates with the one kept for each."""

    images: np.ndarray
    labels: np.ndarray
    codepoints: list[str]
    file_names: list[str]
    origin: dict[str, Any]
    duplicates: dict[str, str]


def _entries(files: PackageFiles, vendor: EmojiVendor) -> list[dict[str, Any]]:
    """The emoji.json entries read: base emoji with this vendor's image, in a known category,
    in Unicode's order."""
    data = files.json("emoji.json")
    if not isinstance(data, list):
        raise DataError(f"{files.where}: package/emoji.json is not a list of emoji")
    keep = []
    for i, e in enumerate(data):
        if not isinstance(e, dict) or not all(k in e for k in ("unified", "category", "image")):
            raise DataError(
                f"{files.where}: package/emoji.json entry {i} lacks unified/category/image"
            )
        if not e.get(f"has_img_{vendor.image_set}") or e["category"] in EXCLUDED_CATEGORIES:
            continue
        if e["category"] not in CATEGORIES:
            raise DataError(
                f"{files.where}: package/emoji.json entry {e['unified']} has category "
                f"{e['category']!r}, expected one of {', '.join(CATEGORIES)}"
            )
        keep.append(e)
    if not keep:
        raise DataError(
            f"{files.where}: package/emoji.json lists no emoji with has_img_{vendor.image_set}"
        )
    return sorted(keep, key=lambda e: (e.get("sort_order", 0), e["unified"]))


def _relatives(entries: list[dict[str, Any]], vendor: EmojiVendor) -> list[str]:
    return ["emoji.json"] + [vendor.image_dir + e["image"] for e in entries]


def composite(data: bytes, where: str) -> np.ndarray:
    """A 64x64 PNG with or without alpha -> uint8 (3, 64, 64) on white (the module's rule)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)  # (H, W, 4)
    except UnidentifiedImageError:
        raise DataError(f"{where}: not a decodable image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(f"{where}: corrupt or truncated image ({e})") from None
    if rgba.shape[:2] != (SIZE, SIZE):
        raise DataError(f"{where}: {rgba.shape[1]}x{rgba.shape[0]} pixels, expected {SIZE}x{SIZE}")
    rgb, a = rgba[..., :3], rgba[..., 3:]
    out = (rgb * a + BACKGROUND * (255 - a) + 127) // 255  # (H, W, 3)
    return out.astype(np.uint8).transpose(2, 0, 1)  # (3, H, W)


def open_package(
    vendor: EmojiVendor, *, path: Path | None, cache_dir: Path, single: bool = True
) -> PackageFiles:
    """The vendor's package from ``path`` (tarball or unpacked copy) or the cache / npm."""

    def wanted(relative: str) -> bool:
        return relative == "emoji.json" or relative.startswith(vendor.image_dir)

    pkg = vendor.package
    if path is None:
        files = open_tarball(npm_pack(pkg, cache_dir / "npm"), pkg, wanted)
        files.origin["fetched_with"] = f"npm pack {pkg.spec}"
        return files
    local = find_local(path, pkg, single=single)
    if local.is_file():
        files = open_tarball(local, pkg, wanted)
        files.origin["path"] = str(local)
        return files
    return open_unpacked(
        local, pkg, lambda f: content_digest(f, _relatives(_entries(f, vendor), vendor))
    )


def read_vendor(files: PackageFiles, vendor: EmojiVendor) -> EmojiSet:
    """Decode the vendor's base emoji from its package files."""
    entries = _entries(files, vendor)
    names = [vendor.image_dir + e["image"] for e in entries]
    images = np.stack([composite(files.read(n), f"{files.where}: package/{n}") for n in names])
    first: dict[bytes, int] = {}
    keep, duplicates = [], {}
    for i, img in enumerate(images):
        j = first.setdefault(img.tobytes(), i)
        if j == i:
            keep.append(i)
        else:
            duplicates[entries[i]["unified"]] = entries[j]["unified"]
    entries = [entries[i] for i in keep]
    images = images[keep]  # (N, 3, 64, 64), distinct
    labels = np.array([CATEGORIES.index(e["category"]) for e in entries], dtype=np.int64)
    origin = {
        **files.origin,
        "artwork": vendor.artwork,
        "images": f"package/{vendor.image_dir}*.png, one per base emoji (no skin-tone variants)",
        "excluded_categories": dict(EXCLUDED_CATEGORIES),
        "order": "emoji.json sort_order, then codepoint",
        "background": "white: (rgb * a + 255 * (255 - a) + 127) // 255",
        "duplicates": duplicates,
    }
    return EmojiSet(
        images=images,  # (N, 3, 64, 64)
        labels=labels,
        codepoints=[e["unified"] for e in entries],
        file_names=[vendor.image_dir + e["image"] for e in entries],
        origin=origin,
        duplicates=duplicates,
    )


def _licence(vendor: EmojiVendor) -> dict[str, str]:
    return {"artwork": vendor.artwork, **vendor.licence}


def load_vendor(vendor_key: str, *, path: Path | None, cache_dir: Path) -> Loaded:
    """One vendor's base emoji as an ``images`` dataset labelled by category."""
    vendor = VENDORS[vendor_key]
    s = read_vendor(open_package(vendor, path=path, cache_dir=cache_dir), vendor)
    return Loaded(
        arrays={"images": s.images},
        labels=s.labels,
        class_names=list(CATEGORIES),
        origin=s.origin,
        meta={
            "licence": _licence(vendor),
            "codepoints": {"images": s.codepoints},
            "file_names": s.file_names,
        },
    )


def deal_halves(labels: np.ndarray, seed: int = PAIR_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Rows dealt per label by a seeded permutation: the first half (rounded down) of each
    label's rows to ``a``, the rest to ``b``; both sorted."""
    rng = np.random.default_rng(seed)
    half_a, half_b = [], []
    for k in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == k))
        half_a.append(rows[: len(rows) // 2])
        half_b.append(rows[len(rows) // 2 :])
    return np.sort(np.concatenate(half_a)), np.sort(np.concatenate(half_b))


def load_pair(*, path: Path | None, cache_dir: Path) -> Loaded:
    """``twemoji-noto``: the emoji both vendors draw, dealt per category into two disjoint
    halves; ``a`` = Twemoji's drawings of one half, ``b`` = Noto's drawings of the other."""
    tw_vendor, noto_vendor = VENDORS["twemoji"], VENDORS["noto"]
    tw = read_vendor(
        open_package(tw_vendor, path=path, cache_dir=cache_dir, single=False), tw_vendor
    )
    noto = read_vendor(
        open_package(noto_vendor, path=path, cache_dir=cache_dir, single=False), noto_vendor
    )
    noto_row = {c: i for i, c in enumerate(noto.codepoints)}
    shared = np.array([i for i, c in enumerate(tw.codepoints) if c in noto_row], dtype=np.int64)
    if len(shared) < 2:
        raise DataError(
            f"the Twemoji and Noto packages share {len(shared)} emoji; the pair needs at least 2"
        )
    ia, ib = deal_halves(tw.labels[shared])
    rows_a = shared[ia]  # rows of tw
    rows_b = np.array([noto_row[tw.codepoints[i]] for i in shared[ib]], dtype=np.int64)
    codepoints_a = [tw.codepoints[i] for i in rows_a]
    codepoints_b = [noto.codepoints[i] for i in rows_b]
    return Loaded(
        arrays={"a": tw.images[rows_a], "b": noto.images[rows_b]},  # (Na|Nb, 3, 64, 64)
        origin={
            "pair": "twemoji-noto",
            "a": tw.origin,
            "b": noto.origin,
            "shared_emoji": len(shared),
            "split_rule": "the emoji both packages draw; per category, a seeded permutation: "
            "first half (rounded down) -> a (Twemoji), the rest -> b (Noto)",
            "seed": PAIR_SEED,
        },
        meta={
            "licence": {"a": _licence(tw_vendor), "b": _licence(noto_vendor)},
            "codepoints": {"a": codepoints_a, "b": codepoints_b},
            "pairing": pairing_record(path),
            "categories": {
                "a": [CATEGORIES[k] for k in tw.labels[rows_a]],
                "b": [CATEGORIES[k] for k in noto.labels[rows_b]],
            },
        },
    )


def pairing_record(path: Path | None) -> dict[str, Any]:
    """The pair's ``pairing`` in meta.json (:mod:`gan_models.data.pairing` reads it): images
    keyed by ``codepoints``, drawn by ``twemoji`` (a) and ``noto`` (b), the packages from
    ``path`` when fetch was given one (else the download cache / npm)."""
    record: dict[str, Any] = {
        "by": "codepoints",
        "source": "emoji",
        "drawn_by": {"a": "twemoji", "b": "noto"},
    }
    if path is not None:
        record["path"] = str(Path(path).resolve())
    return record


def counterparts(
    codepoints: Sequence[str],
    vendor_key: str,
    *,
    path: Path | None = None,
    cache_dir: Path | None = None,
) -> np.ndarray:
    """The drawings (N, 3, 64, 64) uint8 by ``vendor_key`` ("twemoji" or "noto") of the emoji
    ``codepoints``, in order: the true counterpart of a translated image of the other vendor.
    The package comes from ``path`` or the cache / npm, as for fetch."""
    from gan_models.data.download import cache_dir_default

    if vendor_key not in VENDORS:
        raise DataError(f"unknown emoji vendor {vendor_key!r}; known: {', '.join(VENDORS)}")
    vendor = VENDORS[vendor_key]
    files = open_package(vendor, path=path, cache_dir=cache_dir or cache_dir_default())
    s = read_vendor(files, vendor)
    row = {c: i for i, c in enumerate(s.codepoints)}
    row.update({c: row[kept] for c, kept in s.duplicates.items()})  # the same drawing
    missing = [c for c in codepoints if c not in row]
    if missing:
        raise DataError(
            f"{vendor.artwork} ({vendor.package.spec}) has no drawing of {len(missing)} "
            f"codepoint(s): {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}"
        )
    return s.images[[row[c] for c in codepoints]]  # (N, 3, 64, 64)


def split_codepoints(
    raw_dir: str | Path, processed_dir: str | Path, split: str
) -> dict[str, list[str]]:
    """Codepoints of each domain's images in a preprocessed split of the emoji pair, in row
    order: preprocess splits an unpaired set's domains unlabelled, by ``split_indices`` with the
    params its manifest records. (A single vendor's splits name their files under
    ``file_names`` in their own meta.json.)"""
    import json

    from gan_models.data.format import read_meta
    from gan_models.data.preprocess import PreprocessParams, split_indices

    raw = read_meta(raw_dir)
    if raw.get("kind") != "unpaired" or not isinstance(raw.get("codepoints"), dict):
        raise DataError(f"{raw_dir}: not an emoji pair (an unpaired set with codepoints)")
    manifest_file = Path(processed_dir) / "manifest.json"
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{manifest_file}: cannot read the preprocess manifest ({e})") from None
    params = PreprocessParams.model_validate(manifest["params"])
    return {
        k: [cps[i] for i in split_indices(len(cps), None, params)[split]]
        for k, cps in raw["codepoints"].items()
    }
