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

Loading reads the headers only (sizes, colour; their errors come first); the images are decoded
when the dataset is written, by a few threads, a chunk of at most :data:`CHUNK_BYTES` at a time
appended in order, so memory does not grow with the number of images. ``.npy``/``.npz`` array
files given as the folder are read the same way (:func:`load_array_file`).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gan_models.data.arrays import CHUNK_BYTES, load_array_file
from gan_models.data.loaded import ChunkedArray, Loaded
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
# Images or array rows read at once when a dataset is written (decoding: at most 1,024 images).


def _hidden(p: Path) -> bool:
    return p.name.startswith(".")


def _check_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such folder ({what})")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder ({what})")


def image_files(root: Path) -> list[str]:
    """Every image under ``root`` (recursive), as path strings in the order of their sorted
    paths; any other visible file is an error. Strings, not Paths: a Path costs about three
    times the memory, which counts at a few hundred thousand files."""
    files: list[str] = []

    def walk(d: str) -> None:
        for name in sorted(os.listdir(d)):  # depth first over sorted names = sorted paths
            if name.startswith("."):
                continue
            path = f"{d}/{name}"
            if os.path.isdir(path):
                if not os.path.islink(path):  # as rglob: symlinked folders are not entered
                    walk(path)
                continue
            suffix = Path(name).suffix
            if suffix.lower() not in IMAGE_EXTENSIONS:
                raise DataError(
                    f"{path}: not an image file (extension {suffix or 'none'!r}); image folders "
                    f"may hold only {', '.join(sorted(IMAGE_EXTENSIONS))} files"
                )
            files.append(path)

    walk(str(root))
    return files


def list_images(root: Path) -> list[Path]:
    """Every image under ``root`` (recursive, sorted); any other visible file is an error."""
    return [Path(f) for f in image_files(root)]


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


def _probe_all(files: Sequence[str | Path], image_size: int | None) -> tuple[tuple[int, int], bool]:
    """(W, H) every image is decoded to and whether the set is colour, from the headers.

    Without ``image_size`` every image must have one size; the error names the first file whose
    size differs from the most common one. Keeps a count per size seen, not a row per file.
    """
    sizes: Counter[tuple[int, int]] = Counter()
    first: dict[tuple[int, int], int] = {}  # size -> index of the first file of that size
    rgb = False
    for i, f in enumerate(files):
        size, colour = _probe(Path(f))
        rgb = rgb or colour
        sizes[size] += 1
        first.setdefault(size, i)
    if image_size is not None:
        return (image_size, image_size), rgb
    if len(sizes) > 1:
        common = sizes.most_common(1)[0][0]
        i = min(j for size, j in first.items() if size != common)
        f = files[i]
        w, h = next(size for size, j in first.items() if j == i)
        seen = ", ".join(f"{sw}x{sh} ({n} files)" for (sw, sh), n in sizes.most_common())
        raise DataError(
            f"{f}: size {w}x{h} differs from the most common size {common[0]}x{common[1]}; "
            f"sizes seen: {seen}. All images must share one size, or pass --image-size S "
            "to center-crop and resize every image to SxS"
        )
    return next(iter(sizes)), rgb


def decode_images(
    files: Sequence[str | Path], *, image_size: int | None = None, root: Path | None = None
) -> tuple[ChunkedArray, dict[str, Any]]:
    """``files`` as a uint8 array (N, C, H, W) decoded a chunk at a time, and its lineage.

    The headers are read now (sizes, colour: errors come before anything is written); the
    images are decoded when the array is read, by a few threads, one chunk of at most
    :data:`CHUNK_BYTES` after the other, in order. The lineage holds the file count and, once
    the last chunk is read, one sha256 over the sorted ``relative path, sha256`` lines of all
    files, so a changed, added or removed image changes it.
    """
    root = root or Path(".")
    (width, height), rgb = _probe_all(files, image_size)
    channels = 3 if rgb else 1
    shape = (len(files), channels, height, width)
    info: dict[str, Any] = {"num_files": len(files), "channels": channels}
    if image_size is not None:
        info["resize"] = f"center-crop to square, PIL bicubic to {image_size}x{image_size}"
    step = max(1, min(1024, CHUNK_BYTES // (channels * height * width)))

    def decode(i: int, out: np.ndarray, first: int) -> str:
        """Decode file i into out[i - first]; its lineage line. Pillow decodes without the GIL."""
        f = Path(files[i])
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
        out[i - first] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return line

    def chunks() -> Iterator[np.ndarray]:
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        digest = hashlib.sha256()
        workers = min(8, os.cpu_count() or 1)
        with (
            ThreadPoolExecutor(workers) as pool,
            tqdm(total=len(files), desc="decode", unit="img", disable=None, file=sys.stderr) as bar,
        ):
            for start in range(0, len(files), step):  # in order: the digest is sequential
                stop = min(start + step, len(files))
                out = np.empty((stop - start, *shape[1:]), dtype=np.uint8)  # (B, C, H, W)
                # The filters are process-wide, not per thread: set once around the chunk.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    rows = range(start, stop)
                    lines = pool.map(decode, rows, repeat(out), repeat(start))
                    for line in lines:
                        digest.update(line.encode())
                        bar.update(1)
                yield out
                del out  # before the next chunk is allocated
        info["files_sha256"] = digest.hexdigest()

    return ChunkedArray(shape, chunks), info


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
        files = image_files(root)
        if not files:
            raise DataError(
                f"{root}: no images found (expected files ending in "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}, or class sub-folders holding them)"
            )
        images, origin = decode_images(files, image_size=image_size, root=root)
        origin["path"] = str(root)  # the digest is added to this dict when images are read
        return Loaded(arrays={"images": images}, origin=origin)

    loose = [p for p in entries if not p.is_dir()]
    if loose:
        raise DataError(
            f"{loose[0]}: a file beside class sub-folders "
            f"({', '.join(d.name for d in class_dirs)}); with class sub-folders every image "
            "must sit inside one (the sub-folder name is its label)"
        )
    files: list[str] = []
    counts = []
    for d in class_dirs:
        class_files = image_files(d)
        if not class_files:
            raise DataError(f"{d}: class sub-folder holds no images; remove it or add images")
        files += class_files
        counts.append(len(class_files))
    images, origin = decode_images(files, image_size=image_size, root=root)
    origin["path"] = str(root)
    return Loaded(
        arrays={"images": images},
        labels=np.repeat(np.arange(len(counts), dtype=np.int64), counts),
        class_names=[d.name for d in class_dirs],
        origin=origin,
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
    arr_a, info_a = decode_images([a[k] for k in keys], image_size=image_size, root=side_a)
    arr_b, info_b = decode_images([b[k] for k in keys], image_size=image_size, root=side_b)
    info_a["dir"], info_b["dir"] = "a", "b"  # the digests are added to these dicts when read
    return Loaded(
        arrays={"a": arr_a, "b": arr_b}, origin={"path": str(root), "a": info_a, "b": info_b}
    )


def load_unpaired(path: str | Path, *, image_size: int | None = None) -> Loaded:
    """Two domains ``a/`` and ``b/`` (or CycleGAN's ``trainA/`` and ``trainB/``), any counts."""
    root = Path(path)
    _check_dir(root, "the unpaired source reads sub-folders a/ and b/ of --path DIR")
    if (root / "a").is_dir() and (root / "trainA").is_dir():
        raise DataError(f"{root}: holds both a/ and trainA/; keep one layout")
    side_a, side_b = _side(root, ("a", "trainA")), _side(root, ("b", "trainB"))
    arr_a, info_a = decode_images(
        _nonempty(list_images(side_a), side_a), image_size=image_size, root=side_a
    )
    arr_b, info_b = decode_images(
        _nonempty(list_images(side_b), side_b), image_size=image_size, root=side_b
    )
    info_a["dir"], info_b["dir"] = side_a.name, side_b.name
    return Loaded(
        arrays={"a": arr_a, "b": arr_b}, origin={"path": str(root), "a": info_a, "b": info_b}
    )
