"""MNIST, Fashion-MNIST and CIFAR-10 from their original files.

The files are downloaded from their canonical URLs (sha256 from tensorflow-datasets' and Keras'
checksum tables) or read from a local folder for air-gapped clusters; their formats are parsed
by :mod:`gan_models.data.idx` and :mod:`gan_models.data.cifar`. The official train and test
splits are concatenated (train first) and ``origin["official_test_range"]`` records the half-open
index range ``[start, stop)`` that held the official test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gan_models.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR_DIR,
    cifar_members_from_dir,
    cifar_members_from_tar,
    read_cifar_batches,
)
from gan_models.data.download import RemoteFile, download
from gan_models.data.idx import find_idx_files, read_idx_dataset
from gan_models.data.loaded import Loaded
from gan_models.errors import DataError
from gan_models.utils.io import sha256_file

# sha256 and sizes: tensorflow-datasets url_checksums/mnist.txt and fashion_mnist.txt;
# CIFAR-10 python archive: Keras' cifar10 loader (file_hash), 170,498,071 bytes.
_MNIST_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)


def _files(mirrors: tuple[str, ...], table: list[tuple[str, int, str]]) -> tuple[RemoteFile, ...]:
    return tuple(
        RemoteFile(name=name, sha256=sha, size=size, urls=tuple(m + name for m in mirrors))
        for name, size, sha in table
    )


MNIST_FILES = _files(
    _MNIST_MIRRORS,
    [
        (
            "train-images-idx3-ubyte.gz",
            9912422,
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            28881,
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        (
            "t10k-images-idx3-ubyte.gz",
            1648877,
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            4542,
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    ],
)
FASHION_MNIST_FILES = _files(
    _FASHION_MIRRORS,
    [
        (
            "train-images-idx3-ubyte.gz",
            26421880,
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            29515,
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        (
            "t10k-images-idx3-ubyte.gz",
            4422102,
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            5148,
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    ],
)
CIFAR10_FILES = _files(
    _CIFAR_MIRRORS,
    [
        (
            "cifar-10-python.tar.gz",
            170498071,
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        )
    ],
)

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class CanonicalDataset:
    """A dataset published as a few original files: where they live and how to read them."""

    name: str
    files: tuple[RemoteFile, ...]
    class_names: tuple[str, ...]
    layout: str  # "idx" or "cifar-python"


CANONICAL: dict[str, CanonicalDataset] = {
    "mnist": CanonicalDataset("mnist", MNIST_FILES, MNIST_CLASSES, "idx"),
    "fashion-mnist": CanonicalDataset(
        "fashion-mnist", FASHION_MNIST_FILES, FASHION_MNIST_CLASSES, "idx"
    ),
    "cifar10": CanonicalDataset("cifar10", CIFAR10_FILES, CIFAR10_CLASSES, "cifar-python"),
}


def with_mirror(files: tuple[RemoteFile, ...], mirror: str) -> tuple[RemoteFile, ...]:
    """The same files (same checksums) served from one other base URL, e.g. an internal mirror."""
    base = mirror if mirror.endswith("/") else mirror + "/"
    return tuple(
        RemoteFile(name=f.name, sha256=f.sha256, size=f.size, urls=(base + f.name,)) for f in files
    )


def _describe_local(path: Path, want: RemoteFile | None) -> dict[str, Any]:
    """Checksum a local original file; a gzipped original must match the published sha256."""
    got = sha256_file(path)
    entry: dict[str, Any] = {"name": path.name, "path": str(path), "sha256": got}
    if want is not None and path.name == want.name:
        if got != want.sha256:
            raise DataError(
                f"{path}: sha256 {got} does not match the published {want.sha256} for "
                f"{want.name}; the file is corrupt or not the original"
            )
        entry["verified"] = True
    else:
        entry["verified"] = False  # an unpacked copy has no published checksum
    return entry


def load_canonical(
    dataset: CanonicalDataset,
    *,
    path: Path | None,
    cache_dir: Path,
    files: tuple[RemoteFile, ...] | None = None,
    timeout: float = 60.0,
) -> Loaded:
    """Read ``dataset`` from ``path`` (the original files) or download it into ``cache_dir``."""
    files = files if files is not None else dataset.files
    by_name = {f.name: f for f in files}
    entries: list[dict[str, Any]] = []
    if path is not None:
        if not path.is_dir():
            raise DataError(
                f"--path {path}: no such folder (expected the original {dataset.name} files)"
            )
        if dataset.layout == "idx":
            local = find_idx_files(path, files)
            entries = [_describe_local(p, by_name[name]) for name, p in local.items()]
            loaded = read_idx_dataset(local)
        else:
            tar_name = files[0].name
            if (path / tar_name).is_file():
                entries = [_describe_local(path / tar_name, by_name[tar_name])]
                loaded = read_cifar_batches(cifar_members_from_tar(path / tar_name))
            else:
                root = path / CIFAR_DIR if (path / CIFAR_DIR).is_dir() else path
                members = cifar_members_from_dir(root)
                entries = [_describe_local(Path(where), None) for _, where in members.values()]
                loaded = read_cifar_batches(members)
    else:
        local = {}
        for f in files:
            local[f.name], _ = download(f, cache_dir / dataset.name, timeout=timeout)
            # The mirror list, not the one that answered, keeps meta.json the same on every run.
            entries.append(
                {
                    "name": f.name,
                    "sha256": f.sha256,
                    "size": f.size,
                    "urls": list(f.urls),
                    "verified": True,
                }
            )
        if dataset.layout == "idx":
            loaded = read_idx_dataset(local)
        else:
            loaded = read_cifar_batches(cifar_members_from_tar(local[files[0].name]))
    if loaded.class_names is None:
        loaded.class_names = list(dataset.class_names)
    loaded.origin = {"dataset": dataset.name, "files": entries, **loaded.origin}
    return loaded
