"""Image folders: a user's own images, with class sub-folders, pairs or two unpaired domains.

Rules, applied to every folder source:

- Files and folders whose name starts with ``.`` are skipped (``.DS_Store``, ``.ipynb_checkpoints``).
  Every other file must be an image with one of :data:`IMAGE_EXTENSIONS` that Pillow can decode;
  anything else is an error naming the file.
- EXIF orientation is applied; an animated image contributes its first frame.
- Channels: if every image is grayscale (modes 1, L, LA, I;16, I) the set has 1 channel;
  if any image is colour, every image becomes RGB (3 channels; gray is repeated, alpha is
  dropped, palettes are expanded). 16-bit gray is mapped to 8 bits by ``round(v * 255 / 65535)``.
- Sizes: without ``image_size`` every image must have the same size; the error names a file
  whose size differs from the most common one and lists the sizes seen. With ``image_size=S``
  each image is center-cropped to a square (side ``min(W, H)``, offsets rounded down) and resized
  to SxS with PIL bicubic.
- ``folder``: sub-folders of ``DIR`` are classes (sorted names -> 0..K-1, nested folders
  included); a flat ``DIR`` has no labels. Images beside class sub-folders are an error.
- ``paired``: ``DIR/a`` and ``DIR/b`` pair files by relative path without extension; a file
  without a partner is an error. ``unpaired``: ``DIR/a`` and ``DIR/b`` (or ``trainA``, ``trainB``).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import warnings
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gan_models.data.loaded import Loaded
from gan_models.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
        ".webp",
        ".gif",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
    }
)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N"})
_ORIENTATION_TAG = 0x0112
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _hidden(p: Path) -> bool:
    return p.name.startswith(".")


def _check_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such folder ({what})")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder ({what})")


def list_images(root: Path) -> list[Path]:
    """Every image under ``root`` (recursive, sorted); any other visible file is an error."""
    files = []
    for p in sorted(root.rglob("*")):
        if any(_hidden(part) for part in p.relative_to(root).parents if part.name) or _hidden(p):
            continue
        if p.is_dir():
            continue
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(
                f"{p}: not an image file (extension {p.suffix or 'none'!r}); image folders may "
                f"hold only {', '.join(sorted(IMAGE_EXTENSIONS))} files"
            )
        files.append(p)
    return files


def _probe(path: Path) -> tuple[tuple[int, int], bool]:
    """(W, H) as displayed and whether the image is colour, from the header only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                mode = im.mode
                orientation = im.getexif().get(_ORIENTATION_TAG, 1)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a decodable image (Pillow cannot identify it)") from None
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: corrupt or truncated image ({e})") from None
    if mode == "F":
        raise DataError(f"{path}: 32-bit float images are not supported; save as 8- or 16-bit")
    if orientation in (5, 6, 7, 8):  # these EXIF orientations rotate by 90 degrees
        w, h = h, w
    return (w, h), mode not in GRAY_MODES


def _to_8bit(im: Image.Image, rgb: bool) -> Image.Image:
    """Convert to ``L`` or ``RGB`` (8 bits per channel) by the module's stated rules."""
    if im.mode.startswith("I"):
        # 16-bit gray: PIL's convert("L") clips at 255, so scale explicitly.
        v = np.asarray(im.convert("I"), dtype=np.int64).clip(0, 65535)  # (H, W)
        im = Image.fromarray(((v * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    elif im.mode in ("LA", "La", "1"):
        im = im.convert("L")
    return im.convert("RGB") if rgb else im.convert("L") if im.mode != "L" else im


def center_crop_resize(im: Image.Image, size: int) -> Image.Image:
    """Center-crop to a square of side ``min(W, H)`` and resize to ``size`` x ``size`` (bicubic)."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = im.crop((left, top, left + side, top + side))
    if side != size:
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    return im


def load_images(
    files: list[Path], *, image_size: int | None = None, root: Path | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode ``files`` into one uint8 array (N, C, H, W) and return it with lineage info.

    The lineage holds the file count and one sha256 over the sorted ``relative path, sha256``
    lines of all files, so a changed, added or removed image changes it.
    """
    root = root or Path(".")
    probes = [_probe(f) for f in files]
    rgb = any(colour for _, colour in probes)
    if image_size is None:
        sizes = Counter(size for size, _ in probes)
        if len(sizes) > 1:
            common = sizes.most_common(1)[0][0]
            i = next(i for i, (size, _) in enumerate(probes) if size != common)
            (w, h), _ = probes[i]
            seen = ", ".join(f"{sw}x{sh} ({n} files)" for (sw, sh), n in sizes.most_common())
            raise DataError(
                f"{files[i]}: size {w}x{h} differs from the most common size "
                f"{common[0]}x{common[1]}; "
                f"sizes seen: {seen}. All images must share one size, or pass --image-size S "
                "to center-crop and resize every image to SxS"
            )
        width, height = next(iter(sizes))
    else:
        width = height = image_size
    channels = 3 if rgb else 1
    out = np.empty((len(files), channels, height, width), dtype=np.uint8)  # (N, C, H, W)
    digest = hashlib.sha256()

    def decode(i: int) -> str:
        """Decode file i into out[i]; its lineage line. Pillow decodes without the GIL."""
        f = files[i]
        data = f.read_bytes()
        line = f"{f.relative_to(root).as_posix()}\t{hashlib.sha256(data).hexdigest()}\n"
        try:
            with Image.open(io.BytesIO(data)) as raw:
                raw.load()  # decode now so that a truncated file fails here, named
                im = ImageOps.exif_transpose(raw)
                im = _to_8bit(im, rgb)
        except UnidentifiedImageError:
            raise DataError(f"{f}: not a decodable image (Pillow cannot identify it)") from None
        except _DECODE_ERRORS as e:
            raise DataError(f"{f}: corrupt or truncated image ({e})") from None
        if image_size is not None:
            im = center_crop_resize(im, image_size)
        arr = np.asarray(im)  # (H, W) or (H, W, 3)
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return line

    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    workers = min(8, os.cpu_count() or 1)
    with (
        warnings.catch_warnings(),  # set once here: the filters are process-wide, not per thread
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(files), desc="decode", unit="img", disable=None, file=sys.stderr) as bar,
    ):
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for start in range(0, len(files), 1024):  # chunks in order: the digest is sequential
            for line in pool.map(decode, range(start, min(start + 1024, len(files)))):
                digest.update(line.encode())
                bar.update(1)
    info = {"num_files": len(files), "files_sha256": digest.hexdigest(), "channels": channels}
    if image_size is not None:
        info["resize"] = f"center-crop to square, PIL bicubic to {image_size}x{image_size}"
    return out, info


def load_array_file(path: Path) -> Loaded:
    """Images from an array file: ``.npy`` (N, C, H, W), (N, H, W, C) with C in 1/3, or (N, H, W),
    uint8; or ``.npz`` with ``images`` in one of those shapes and optional int ``labels`` (N,)."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = dict(z)
        else:
            arrays = {"images": np.load(path, allow_pickle=False)}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: damaged or unreadable array file ({e})") from None
    if "images" not in arrays:
        raise DataError(f"{path}: no 'images' array (found {sorted(arrays)})")
    x, labels = arrays["images"], arrays.get("labels")
    if x.dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 0..255, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"{path}: images of shape {arrays['images'].shape} are not (N, C, H, W)")
    if labels is not None and (labels.ndim != 1 or len(labels) != len(x)):
        raise DataError(f"{path}: labels of shape {labels.shape} do not match {len(x)} images")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    origin = {"path": str(path), "array_file_sha256": digest, "channels": int(x.shape[1])}
    return Loaded(
        arrays={"images": np.ascontiguousarray(x)},
        labels=None if labels is None else labels.astype(np.int64),
        origin=origin,
    )


def load_folder(path: str | Path, *, image_size: int | None = None) -> Loaded:
    """A folder of images; class sub-folders (sorted) give labels 0..K-1. A ``.npy``/``.npz``
    file instead of a folder is imported as an array (:func:`load_array_file`)."""
    root = Path(path)
    if root.is_file() and root.suffix in (".npy", ".npz"):
        if image_size is not None:
            raise DataError(f"{root}: --image-size applies to image folders, not array files")
        return load_array_file(root)
    _check_dir(root, "the folder source reads images from --path DIR")
    entries = [p for p in sorted(root.iterdir()) if not _hidden(p)]
    class_dirs = [p for p in entries if p.is_dir()]
    if not class_dirs:
        files = list_images(root)
        if not files:
            raise DataError(
                f"{root}: no images found (expected files ending in "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}, or class sub-folders holding them)"
            )
        images, info = load_images(files, image_size=image_size, root=root)
        return Loaded(arrays={"images": images}, origin={"path": str(root), **info})

    loose = [p for p in entries if not p.is_dir()]
    if loose:
        raise DataError(
            f"{loose[0]}: a file beside class sub-folders "
            f"({', '.join(d.name for d in class_dirs)}); with class sub-folders every image "
            "must sit inside one (the sub-folder name is its label)"
        )
    files, labels = [], []
    for k, d in enumerate(class_dirs):
        class_files = list_images(d)
        if not class_files:
            raise DataError(f"{d}: class sub-folder holds no images; remove it or add images")
        files += class_files
        labels += [k] * len(class_files)
    images, info = load_images(files, image_size=image_size, root=root)
    return Loaded(
        arrays={"images": images},
        labels=np.asarray(labels, dtype=np.int64),
        class_names=[d.name for d in class_dirs],
        origin={"path": str(root), **info},
    )


def _side(root: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise DataError(
        f"{root}: missing sub-folder {' or '.join(repr(n + '/') for n in names)}; "
        "paired and unpaired sources read two sub-folders a/ and b/"
    )


def _keyed(files: list[Path], side: Path) -> dict[str, Path]:
    """Relative path without extension -> file; two files with one key are ambiguous."""
    keyed: dict[str, Path] = {}
    for f in files:
        key = f.relative_to(side).with_suffix("").as_posix()
        if key in keyed:
            raise DataError(
                f"{f} and {keyed[key]} share the name {key!r}; files pair by name without "
                "extension, so each name may appear once per side"
            )
        keyed[key] = f
    return keyed


def _nonempty(files: list[Path], side: Path) -> list[Path]:
    if not files:
        raise DataError(f"{side}: no images found")
    return files


def load_paired(path: str | Path, *, image_size: int | None = None) -> Loaded:
    """``a/`` and ``b/`` whose files pair by name without extension, sorted by that name."""
    root = Path(path)
    _check_dir(root, "the paired source reads sub-folders a/ and b/ of --path DIR")
    side_a, side_b = _side(root, ("a",)), _side(root, ("b",))
    a = _keyed(_nonempty(list_images(side_a), side_a), side_a)
    b = _keyed(_nonempty(list_images(side_b), side_b), side_b)
    for mine, theirs, other in ((a, b, side_b), (b, a, side_a)):
        lonely = sorted(set(mine) - set(theirs))
        if lonely:
            raise DataError(
                f"{mine[lonely[0]]}: no partner in {other} ({len(lonely)} unpaired file(s) on this "
                "side); files pair by name without extension, e.g. a/001.png with b/001.jpg"
            )
    keys = sorted(a)
    arr_a, info_a = load_images([a[k] for k in keys], image_size=image_size, root=side_a)
    arr_b, info_b = load_images([b[k] for k in keys], image_size=image_size, root=side_b)
    return Loaded(
        arrays={"a": arr_a, "b": arr_b},
        origin={"path": str(root), "a": {"dir": "a", **info_a}, "b": {"dir": "b", **info_b}},
    )


def load_unpaired(path: str | Path, *, image_size: int | None = None) -> Loaded:
    """Two domains ``a/`` and ``b/`` (or CycleGAN's ``trainA/`` and ``trainB/``), any counts."""
    root = Path(path)
    _check_dir(root, "the unpaired source reads sub-folders a/ and b/ of --path DIR")
    if (root / "a").is_dir() and (root / "trainA").is_dir():
        raise DataError(f"{root}: holds both a/ and trainA/; keep one layout")
    side_a, side_b = _side(root, ("a", "trainA")), _side(root, ("b", "trainB"))
    arr_a, info_a = load_images(
        _nonempty(list_images(side_a), side_a), image_size=image_size, root=side_a
    )
    arr_b, info_b = load_images(
        _nonempty(list_images(side_b), side_b), image_size=image_size, root=side_b
    )
    return Loaded(
        arrays={"a": arr_a, "b": arr_b},
        origin={
            "path": str(root),
            "a": {"dir": side_a.name, **info_a},
            "b": {"dir": side_b.name, **info_b},
        },
    )
