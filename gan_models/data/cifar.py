"""The CIFAR-10 python pickle batches, read safely with numpy only.

A pickle can call any importable function while loading, so the batches are unpickled with only
the globals a pickled ndarray needs. ``data_batch_1..5`` then ``test_batch`` become one set whose
``origin["official_test_range"]`` records the half-open index range ``[start, stop)`` that held
the official test split.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gan_models.data.loaded import Loaded
from gan_models.errors import DataError

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


def cifar_members_from_tar(tar_path: Path) -> dict[str, tuple[bytes, str]]:
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


def cifar_members_from_dir(root: Path) -> dict[str, tuple[bytes, str]]:
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
