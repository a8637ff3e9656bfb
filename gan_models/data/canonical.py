"""MNIST, Fashion-MNIST and CIFAR-10 from their original files.

The files are downloaded from their canonical URLs (sha256 from tensorflow-datasets' and Keras'
checksum tables) or read from a local folder for air-gapped clusters. The IDX format and the
CIFAR-10 python pickle batches are parsed here with numpy only. The official train and test
splits are concatenated (train first) and ``origin["official_test_range"]`` records the half-open
index range ``[start, stop)`` that held the official test split.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gan_models.data.download import RemoteFile, download
from gan_models.data.sources import Loaded
from gan_models.errors import DataError
from gan_models.utils.io import sha256_file

# --- IDX (MNIST, Fashion-MNIST) --------------------------------------------------------------

# IDX type codes (third magic byte); multi-byte values are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, where: str = "<bytes>") -> np.ndarray:
    """Parse an IDX file (gzipped or not) into an array in native byte order.

    Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
    dimension, then the values in C order.
    """
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{where}: corrupt gzip stream ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{where}: not an IDX file (the magic number must start with two zero bytes)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DataError(
            f"{where}: unknown IDX type code 0x{code:02x}; expected one of "
            + ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: truncated IDX header ({len(data)} bytes, {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    count = math.prod(dims)
    if len(data) - header != count * dtype.itemsize:
        raise DataError(
            f"{where}: IDX dimensions {dims} need {count * dtype.itemsize} bytes of data, "
            f"the file holds {len(data) - header} (truncated or not an IDX file)"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _read_idx_pair(images: Path, labels: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x = parse_idx(images.read_bytes(), str(images))
    y = parse_idx(labels.read_bytes(), str(labels))
    if x.dtype != np.uint8 or x.ndim != 3:
        raise DataError(
            f"{images}: expected uint8 images of shape (N, H, W), got {x.dtype} {x.shape}"
        )
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{labels}: expected integer labels of shape (N,), got {y.dtype} {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{split} split: {images.name} holds {x.shape[0]} images but {labels.name} "
            f"holds {y.shape[0]} labels"
        )
    return x, y.astype(np.int64)


def read_idx_dataset(files: dict[str, Path]) -> Loaded:
    """Combine the four IDX files (train then t10k) into (N, 1, H, W) uint8 and labels."""
    x_tr, y_tr = _read_idx_pair(
        files["train-images-idx3-ubyte.gz"], files["train-labels-idx1-ubyte.gz"], "train"
    )
    x_te, y_te = _read_idx_pair(
        files["t10k-images-idx3-ubyte.gz"], files["t10k-labels-idx1-ubyte.gz"], "test"
    )
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(
            f"train images are {x_tr.shape[1:]} but test images are {x_te.shape[1:]}; "
            "both splits must share one image size"
        )
    images = np.concatenate([x_tr, x_te])[:, None]  # (N, 1, H, W)
    labels = np.concatenate([y_tr, y_te])
    n_tr = x_tr.shape[0]
    return Loaded(
        arrays={"images": images},
        labels=labels,
        origin={
            "official_train_range": [0, n_tr],
            "official_test_range": [n_tr, n_tr + x_te.shape[0]],
        },
    )


def _find_idx_files(root: Path, files: tuple[RemoteFile, ...]) -> dict[str, Path]:
    """Locate each original ``*.gz`` file under ``root``, or its uncompressed twin."""
    found = {}
    for f in files:
        stem = f.name.removesuffix(".gz")
        # "train-images.idx3-ubyte" is how several unpacked copies name the files.
        names = [f.name, stem, stem.replace("-idx", ".idx")]
        hit = next((root / n for n in names if (root / n).is_file()), None)
        if hit is None:
            raise DataError(
                f"{root}: missing {f.name} (or uncompressed {stem}); --path must hold the "
                f"original files: {', '.join(g.name for g in files)}"
            )
        found[f.name] = hit
    return found


# --- CIFAR-10 python batches -----------------------------------------------------------------

CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_META = "batches.meta"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def _numpy_reconstruct() -> Callable[..., Any]:
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: plain containers plus numpy arrays, nothing else.

    A pickle can call any importable function while loading; a downloaded file is untrusted,
    so only the globals that a pickled ndarray needs are resolved.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, "latin1").
        ("_codecs", "encode"): __import__("codecs").encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} (only containers and numpy arrays)"
            ) from None


def load_cifar_batch(data: bytes, where: str) -> dict[str, Any]:
    """Unpickle one CIFAR-10 python batch safely; keys are returned as ``str``."""
    try:
        obj = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any unpickling failure means the file is not a batch we can trust
        raise DataError(f"{where}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: a CIFAR-10 batch must be a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_arrays(batch: dict[str, Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{where}: 'data' must be a uint8 array of shape (N, 3072)")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{where}: 'data' rows must hold 3072 values (3x32x32), got {data.shape[1]}"
        )
    if not isinstance(labels, list | np.ndarray) or len(labels) != data.shape[0]:
        raise DataError(f"{where}: 'labels' must list one label per row of 'data'")
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= len(CIFAR10_CLASSES)):
        raise DataError(f"{where}: labels must lie in 0..9, got {y.min()}..{y.max()}")
    # Each row is the red plane, then green, then blue, each 32x32 in row-major order.
    return data.reshape(-1, 3, 32, 32), y  # (N, 3, 32, 32)


def read_cifar_batches(members: dict[str, tuple[bytes, str]]) -> Loaded:
    """Combine ``data_batch_1..5`` then ``test_batch`` (name -> (bytes, where)) into one set."""
    xs, ys = [], []
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        data, where = members[name]
        x, y = _cifar_arrays(load_cifar_batch(data, where), where)
        xs.append(x)
        ys.append(y)
    class_names = list(CIFAR10_CLASSES)
    if CIFAR_META in members:
        data, where = members[CIFAR_META]
        names = load_cifar_batch(data, where).get("label_names")
        if isinstance(names, list) and len(names) == len(CIFAR10_CLASSES):
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    n_tr = sum(x.shape[0] for x in xs[:-1])
    n = n_tr + xs[-1].shape[0]
    return Loaded(
        arrays={"images": np.concatenate(xs)},  # (N, 3, 32, 32)
        labels=np.concatenate(ys),
        class_names=class_names,
        origin={"official_train_range": [0, n_tr], "official_test_range": [n_tr, n]},
    )


def _cifar_members_from_tar(tar_path: Path) -> dict[str, tuple[bytes, str]]:
    wanted = {*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH, CIFAR_META}
    members: dict[str, tuple[bytes, str]] = {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            # Read members in memory by their base name; nothing is extracted to disk.
            for info in tar:
                base = info.name.rsplit("/", 1)[-1]
                if info.isfile() and base in wanted:
                    fobj = tar.extractfile(info)
                    assert fobj is not None  # isfile() members always have a file object
                    members[base] = (fobj.read(), f"{tar_path}:{info.name}")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{tar_path}: not a readable tar.gz archive ({e})") from None
    _require_batches(members, str(tar_path))
    return members


def _cifar_members_from_dir(root: Path) -> dict[str, tuple[bytes, str]]:
    members = {}
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH, CIFAR_META):
        p = root / name
        if p.is_file():
            members[name] = (p.read_bytes(), str(p))
    _require_batches(members, str(root))
    return members


def _require_batches(members: dict[str, Any], where: str) -> None:
    missing = [n for n in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH) if n not in members]
    if missing:
        raise DataError(
            f"{where}: missing CIFAR-10 batch files {missing}; expected "
            f"{', '.join(CIFAR_TRAIN_BATCHES)} and {CIFAR_TEST_BATCH}"
        )


# --- the canonical table ---------------------------------------------------------------------

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
            local = _find_idx_files(path, files)
            entries = [_describe_local(p, by_name[name]) for name, p in local.items()]
            loaded = read_idx_dataset(local)
        else:
            tar_name = files[0].name
            if (path / tar_name).is_file():
                entries = [_describe_local(path / tar_name, by_name[tar_name])]
                loaded = read_cifar_batches(_cifar_members_from_tar(path / tar_name))
            else:
                root = path / CIFAR_DIR if (path / CIFAR_DIR).is_dir() else path
                members = _cifar_members_from_dir(root)
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
            loaded = read_cifar_batches(_cifar_members_from_tar(local[files[0].name]))
    if loaded.class_names is None:
        loaded.class_names = list(dataset.class_names)
    loaded.origin = {"dataset": dataset.name, "files": entries, **loaded.origin}
    return loaded
