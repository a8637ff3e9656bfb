"""True counterparts of a processed unpaired split, for paired evaluation of an unpaired model.

An unpaired set whose two domains are drawings of known items by two hands (``twemoji-noto``:
Twemoji's drawings of half the emoji as ``a``, Noto's of the other half as ``b``) records in its
raw ``meta.json`` what each image shows (``codepoints``, per domain) and a ``pairing``: what the
images are keyed by (``by``), the data module that can draw any key (``source``), whose drawing
each domain holds (``drawn_by``) and, when fetch was given one, the ``path`` of the packages.
Preprocess carries both into every split's ``meta.json``, the codepoints of that split's rows in
row order. :func:`split_counterparts` turns them into, for each domain's images of a split, the
other hand's drawing of the same item, through preprocess's own transform with the params the
split's manifest records, so the counterparts are at the model's data size and preprocessing
byte for byte as if preprocess had written them. A split without them gives None, and evaluation
stays what it was.

Where the drawings come from (``emoji``): the pinned npm packages the pair was fetched from, read
from the ``pairing.path`` folder when it still exists, else from the download cache
(``$GANOPS_CACHE_DIR`` or ``~/.cache/ganops``, then ``downloads/npm/``), where ``ganops data
fetch twemoji-noto`` left them, checked against their pinned sha256 again. So evaluation works
offline on the machine that fetched the pair; elsewhere (data from ``dvc pull``) the first
evaluation runs ``npm pack`` once, or names the tarball to pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gan_models.data.format import read_meta
from gan_models.data.preprocess import PreprocessParams, preprocess_images
from gan_models.errors import DataError

# A source's drawings: (keys, whose drawing, package path or None) -> uint8 (N, C, H, W) raw.
DrawFn = Callable[[Sequence[str], str, Path | None], np.ndarray]


def _emoji_drawings(keys: Sequence[str], drawn_by: str, path: Path | None) -> np.ndarray:
    from gan_models.data.download import cache_dir_default
    from gan_models.data.emoji import VENDORS, counterparts

    try:
        return counterparts(keys, drawn_by, path=path, cache_dir=cache_dir_default())
    except DataError as e:
        pkg = VENDORS[drawn_by].package if drawn_by in VENDORS else None
        hint = (
            f" (the true counterparts come from {pkg.spec}: `ganops data fetch twemoji-noto` "
            "leaves it in the download cache)"
            if pkg is not None
            else ""
        )
        raise DataError(f"paired evaluation: {e}{hint}") from None


#: Sources that can draw any key of a pair, by the ``pairing.source`` name a raw set records.
SOURCES: dict[str, DrawFn] = {"emoji": _emoji_drawings}


@dataclass(frozen=True)
class Counterparts:
    """The true counterparts of one domain's images of a split, in the split's row order."""

    keys: list[str]  # what each image shows (its codepoint)
    images: np.ndarray  # uint8 (N, C, S, S): the other domain's drawing of each, preprocessed
    drawn_by: str  # whose drawings ``images`` are
    by: str  # what the images are keyed by ("codepoints")
    source: str  # the data module that drew them ("emoji")

    def lineage(self) -> dict[str, Any]:
        """How the pairs were matched, for a result's record (no machine paths)."""
        return {"by": self.by, "source": self.source, "drawn_by": self.drawn_by}


def pairing_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    """A split's (or raw set's) ``pairing`` when it also keeps its images' keys, else None."""
    pairing, keys = meta.get("pairing"), meta.get("codepoints")
    if not isinstance(pairing, dict) or not isinstance(keys, dict):
        return None
    if pairing.get("by") != "codepoints" or pairing.get("source") not in SOURCES:
        return None
    drawn_by = pairing.get("drawn_by")
    if not isinstance(drawn_by, dict) or set(drawn_by) != {"a", "b"}:
        return None
    return pairing


def split_counterparts(root: str | Path, split: str) -> dict[str, Counterparts] | None:
    """For each domain ``k`` of the processed unpaired set ``root``'s ``split``: the other
    domain's drawing of each of ``k``'s images, at the split's size and preprocessing. None when
    the split keeps no keys and pairing (every set but a pair like ``twemoji-noto``)."""
    root = Path(root)
    meta = read_meta(root / split)
    pairing = pairing_of(meta)
    if pairing is None:
        return None
    manifest_file = root / "manifest.json"
    try:
        params = PreprocessParams.model_validate(json.loads(manifest_file.read_text())["params"])
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise DataError(f"{manifest_file}: cannot read the preprocess params ({e})") from None
    draw = SOURCES[pairing["source"]]
    path = Path(pairing["path"]) if pairing.get("path") else None
    if path is not None and not path.exists():
        path = None  # fetched from a folder that is gone: the cache / npm
    out = {}
    for k, other in (("a", "b"), ("b", "a")):
        keys = list(meta["codepoints"][k])
        n = meta["arrays"][k][0]
        if len(keys) != n:
            raise DataError(f"{root / split}: {len(keys)} codepoints for {n} images of {k!r}")
        drawn_by = pairing["drawn_by"][other]
        images = preprocess_images(draw(keys, drawn_by, path), params)  # (N, C', S, S) uint8
        if list(images.shape[1:]) != list(meta["arrays"][k][1:]):
            raise DataError(
                f"{root / split}: counterparts of {k!r} are {list(images.shape[1:])} after "
                f"preprocess, the split's images {meta['arrays'][k][1:]}"
            )
        out[k] = Counterparts(keys, images, drawn_by, pairing["by"], pairing["source"])
    return out
