"""The one on-disk format for image sets (raw and processed alike).

A dataset directory holds named uint8 arrays of shape (N, C, H, W) as ``.npy`` files, an optional
int64 ``labels.npy`` of shape (N,), and ``meta.json``::

    data/raw/NAME/
      images.npy      uint8 (N, C, H, W)       kind "images", 0..255 (processed sets written
                                               before format 2: float32 in [-1, 1])
      labels.npy      int64 (N,)               optional, class indices 0..K-1
      meta.json       name, source, kind, arrays (shape per array), num_classes, class_names,
                      sha256 of every .npy file, origin (where it came from)

Kinds: ``images`` (one array ``images``), ``paired`` (``a`` and ``b`` with equal N, e.g. low-res
and high-res), ``unpaired`` (``a`` and ``b``, any N each). Directories are written whole or not
at all (see :func:`gan_models.utils.io.atomic_dir`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gan_models.errors import DataError
from gan_models.utils.io import atomic_dir, sha256_file

if TYPE_CHECKING:
    from gan_models.data.loaded import ChunkedArray

KINDS: dict[str, tuple[str, ...]] = {
    "images": ("images",),
    "paired": ("a", "b"),
    "unpaired": ("a", "b"),
}
# 2: processed images are uint8 (scaled to [-1, 1] on the device); 1 stored them as float32.
FORMAT_VERSION = 2


@dataclass
class ImageSet:
    """Arrays of one dataset directory, loaded into memory."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "images")

    @property
    def images(self) -> np.ndarray:
        return self.arrays["images"]

    @property
    def num_classes(self) -> int | None:
        return self.meta.get("num_classes")


def _check_arrays(
    kind: str, arrays: dict[str, np.ndarray | ChunkedArray], labels: np.ndarray | None
) -> None:
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind {kind!r}; expected one of {sorted(KINDS)}")
    if set(arrays) != set(KINDS[kind]):
        raise DataError(
            f"a {kind!r} dataset needs arrays {list(KINDS[kind])}, got {sorted(arrays)}"
        )
    for key, arr in arrays.items():
        if arr.dtype not in (np.uint8, np.float32) or arr.ndim != 4:
            raise DataError(
                f"array {key!r} must be uint8 (0..255) or float32 (-1..1) of shape (N, C, H, W), "
                f"got {arr.dtype} {arr.shape}"
            )
        if arr.shape[0] == 0:
            raise DataError(f"array {key!r} holds no images")
    if kind == "paired" and arrays["a"].shape[0] != arrays["b"].shape[0]:
        raise DataError(
            f"paired arrays must hold as many images each: a has {arrays['a'].shape[0]}, "
            f"b has {arrays['b'].shape[0]}"
        )
    if labels is not None:
        n = arrays[KINDS[kind][0]].shape[0]
        if labels.ndim != 1 or labels.shape[0] != n:
            raise DataError(f"labels must have shape ({n},), got {labels.shape}")


def write_imageset(
    path: str | Path,
    arrays: dict[str, np.ndarray | ChunkedArray],
    *,
    labels: np.ndarray | None = None,
    meta: dict[str, Any],
    kind: str = "images",
) -> dict[str, Any]:
    """Write a dataset directory atomically and return the meta that was written.

    A :class:`ChunkedArray` is written chunk by chunk as it is read, never held whole; an error
    while reading it (a truncated image, a damaged array file) leaves nothing at ``path``.
    """
    _check_arrays(kind, arrays, labels)
    path = Path(path)
    meta = dict(meta)
    meta.update(
        format_version=FORMAT_VERSION,
        kind=kind,
        arrays={k: list(v.shape) for k, v in arrays.items()},
    )
    with atomic_dir(path) as tmp:
        for key, arr in arrays.items():
            if hasattr(arr, "chunks"):  # a ChunkedArray (duck-typed: no import of the sources)
                arr.write(tmp / f"{key}.npy")
            else:
                np.save(tmp / f"{key}.npy", np.ascontiguousarray(arr))
        meta = finish_imageset(tmp, meta, labels=labels)
    return meta


def finish_imageset(
    tmp: Path, meta: dict[str, Any], *, labels: np.ndarray | None = None
) -> dict[str, Any]:
    """Complete a dataset directory whose image arrays are already written (``meta`` names
    them under ``arrays``): write the labels, the sha256 of every file and meta.json."""
    meta = dict(meta)
    if labels is not None:
        labels = labels.astype(np.int64)
        meta.setdefault("num_classes", int(labels.max()) + 1)
        np.save(tmp / "labels.npy", labels)
    names = [f"{k}.npy" for k in meta["arrays"]] + (["labels.npy"] if labels is not None else [])
    meta["sha256"] = {n: sha256_file(tmp / n) for n in names}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise DataError(
            f"{path} is not a dataset directory (no meta.json); "
            "create one with `ganops data fetch SOURCE --name NAME`"
        )
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path}: not valid JSON ({e})") from None


def load_array(file: Path, *, mmap: bool = False) -> np.ndarray:
    """One ``.npy`` file; a damaged or truncated file is a :class:`DataError` naming it."""
    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(
            f"{file}: damaged or truncated .npy file ({e}); fetch or preprocess it again"
        ) from None


def read_imageset(path: str | Path, *, verify: bool = False, mmap: bool = False) -> ImageSet:
    """Load a dataset directory; with ``verify`` the sha256 of every file is checked first.

    With ``mmap`` the image arrays are memory-mapped read-only (read when indexed); labels are
    always loaded.
    """
    path = Path(path)
    meta = read_meta(path)
    kind = meta.get("kind", "images")
    if kind not in KINDS:
        raise DataError(f"{path / 'meta.json'}: unknown kind {kind!r}")
    names = list(KINDS[kind]) + (["labels"] if "labels.npy" in meta.get("sha256", {}) else [])
    loaded: dict[str, np.ndarray] = {}
    for key in names:
        file = path / f"{key}.npy"
        if not file.is_file():
            raise DataError(f"{file} is missing (listed in {path / 'meta.json'})")
        if verify:
            want = meta.get("sha256", {}).get(f"{key}.npy")
            got = sha256_file(file)
            if want != got:
                raise DataError(f"{file}: sha256 {got} does not match meta.json's {want}")
        loaded[key] = load_array(file, mmap=mmap and key != "labels")
    labels = loaded.pop("labels", None)
    _check_arrays(kind, loaded, labels)
    return ImageSet(arrays=loaded, labels=labels, meta=meta)
