"""The generator explorer: ONNX export checked against torch, the page in headless Chromium
(served on 127.0.0.1, no other host reachable), the model under Node, and bad input.

Tiny real runs on 8x8 bars: DCGAN with an 8-d latent (torch's scalar randn path), cGAN with a
20-d latent (the block path with a redrawn tail), StyleGAN, CycleGAN and SRGAN.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import chromium as launch_chromium
from browser import offline
from mlflow_server import shared_mlflow_server
from PIL import Image
from test_registry import evaluated_copy, metrics_json
from test_zoo import _bars

from gan_models.data.format import write_imageset
from gan_models.errors import GanopsError
from gan_models.explore.bundle import write_bundle
from gan_models.explore.onnx_export import TOLERANCE
from gan_models.explore.server import make_server
from gan_models.families import FAMILIES
from gan_models.families.base import Family
from gan_models.sampling import RunGenerator
from gan_models.tracking.registry import register_run
from gan_models.tracking.store import using_tracking_uri
from gan_models.training import train
from gan_models.training.generate import generate_from_latents, sample_latents
from gan_models.training.params import TrainParams
from gan_models.utils.images import to_uint8

ROOT = Path(__file__).resolve().parent.parent
GANOPS = str(Path(sys.executable).with_name("ganops"))
# family -> (latent_dim, training steps, data kind); enough steps that seeds look different
RUNS = {
    "dcgan": (8, 20, "images"),
    "cgan": (20, 20, "images"),
    "stylegan": (16, 2, "images"),
    "vanilla": (8, 2, "images"),
    "wgan": (8, 2, "images"),
    "wgan-gp": (8, 2, "images"),
    "cyclegan": (8, 2, "unpaired"),
    "srgan": (8, 2, "paired"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explore")
    bars, labels = _bars(48, 0)
    other, _ = _bars(40, 1)
    low = bars.reshape(48, 1, 4, 2, 4, 2).mean((3, 5)).round().astype(np.uint8)
    data = {
        "images": root / "bars",
        "unpaired": root / "inverted",
        "paired": root / "pairs",
    }
    write_imageset(data["images"], {"images": bars}, labels=labels, meta={"name": "bars"})
    write_imageset(
        data["unpaired"], {"a": bars, "b": 255 - other}, meta={"name": "inv"}, kind="unpaired"
    )
    write_imageset(data["paired"], {"a": low, "b": bars}, meta={"name": "sr"}, kind="paired")
    out = {}
    for family, (z, steps, kind) in RUNS.items():
        model = {"family": family, "width": 8}
        model |= {} if kind != "images" else {"latent_dim": z}  # translators take images
        model |= {"stylegan": {"mapping_layers": 2}, "srgan": {"scale": 2, "res_blocks": 1}}.get(
            family, {}
        )
        model |= {"cyclegan": {"res_blocks": 1}}.get(family, {})
        params = TrainParams.model_validate(
            {
                "data": {"path": str(data[kind])} | ({"image_size": 8} if kind == "paired" else {}),
                "model": model,
                "train": {
                    "steps": steps,
                    "batch_size": 8,
                    "lr": 0.002,
                    "ema_decay": None,
                    "progress": False,
                    "log_every": steps,
                    "checkpoint_every": steps,
                    "sample_every": steps,
                },
            }
        )
        train(params, root / family)
        out[family] = root / family
    return out


@pytest.fixture(scope="module")
def bundles(runs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {
        f: _bundle(runs[f], root / f) for f in ("dcgan", "cgan", "stylegan", "cyclegan", "srgan")
    }


def _bundle(run: Path, out: Path) -> Path:
    write_bundle(RunGenerator.from_run_dir(run), out)
    return out


@pytest.fixture(scope="module")
def chromium():
    with launch_chromium() as b:
        yield b


@pytest.fixture(scope="module")
def serve():
    """serve(folder) -> base URL of the product's own server over that folder."""
    servers = []

    def start(folder: Path) -> str:
        server = make_server("127.0.0.1", 0, folder)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def open_page(chromium, url: str, **kw):
    """A page at ``url`` that may reach only this machine, once the explorer has drawn.

    ``page.blocked``: requests refused; ``page.errors``: uncaught errors and console errors."""
    context = chromium.new_context(**kw)
    page = context.new_page()
    page.blocked = offline(context)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_function("['1', 'error'].includes(document.body.dataset.ready)", timeout=120_000)
    assert page.evaluate("document.body.dataset.ready") == "1", page.text_content("#status")
    return page


def settle(page) -> None:
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)


def tile_pixels(page, i: int) -> np.ndarray:
    """Tile i's RGBA pixels as (H, W, 4) uint8."""
    size = page.evaluate("window.explorer.info.image_size")
    return np.array(page.evaluate(f"window.explorer.pixels({i})"), np.uint8).reshape(size, size, 4)


def as_grey(images: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) in [-1, 1] -> (H, W, 3) uint8 as the page draws it (grey: one channel x3)."""
    img = to_uint8(images)[0]
    return np.repeat(img, 3, 0).transpose(1, 2, 0) if img.shape[0] == 1 else img.transpose(1, 2, 0)


def max_grey_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a[..., :3].astype(int) - b[..., :3].astype(int)).max())


# ------------------------------------------------------------------------------ export


@pytest.mark.parametrize("family", list(RUNS))
def test_onnx_export_matches_torch_for_every_family(family, runs, tmp_path):
    import onnxruntime as ort

    gen = RunGenerator.from_run_dir(runs[family])
    info = write_bundle(gen, tmp_path / "b")
    assert set(FAMILIES) == set(RUNS)  # every family of the zoo is exported here
    for file, m in info["models"].items():
        assert 0 <= m["max_abs_diff"] <= TOLERANCE, file
    # an independent check on other inputs than the export's own
    gen = RunGenerator.from_run_dir(runs[family])
    if info["kind"] == "image":
        x = gen.inputs(5, seed=99)
        got = _run_onnx(ort, tmp_path / "b/generator.onnx", {"input": x.numpy()})
        want = generate_from_latents(gen.family, gen.nets, x)
    elif info["kind"] == "style":
        z = sample_latents(5, gen.params.model.latent_dim, 99)
        w = _run_onnx(ort, tmp_path / "b/mapping.onnx", {"z": z.numpy()})
        got = _run_onnx(ort, tmp_path / "b/synthesis.onnx", {"w": w})
        want = gen.generate(5, 99)[0]
        assert len(info["w_avg"]) == gen.params.model.latent_dim
    else:
        feeds = {"z": sample_latents(5, gen.params.model.latent_dim, 99).numpy()}
        if gen.family.conditional:
            feeds["label"] = np.array([0, 1, 2, 0, 1], np.int64)
        got = _run_onnx(ort, tmp_path / "b/generator.onnx", feeds)
        want = gen.generate(5, 99, labels=torch.tensor([0, 1, 2, 0, 1]))[0]
    assert got.shape == tuple(want.shape)
    assert np.abs(got - want.numpy()).max() <= TOLERANCE
    if info["kind"] != "image":
        d = info["directions"]
        comps = np.array(d["components"])
        assert comps.shape == (min(8, gen.params.model.latent_dim), gen.params.model.latent_dim)
        np.testing.assert_allclose(comps @ comps.T, np.eye(len(comps)), atol=1e-6)
        assert all(a >= b for a, b in zip(d["std"], d["std"][1:], strict=False))


def _run_onnx(ort, path: Path, feeds: dict) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def test_model_runs_under_node_with_the_pages_latents(bundles, runs):
    """onnxruntime-web under Node, latents from the page's randn.js: torch's images."""
    for family, seeds in (("dcgan", [0, 7, 123456789]), ("cgan", [3, 2**32 - 1])):
        out = subprocess.run(
            ["node", str(ROOT / "tests/explore_node.mjs"), str(bundles[family]), *map(str, seeds)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        result = json.loads(out.stdout)
        gen = RunGenerator.from_run_dir(runs[family])
        z = torch.cat([sample_latents(1, gen.params.model.latent_dim, s) for s in seeds])
        latents = np.array(result["latents"], np.float32).reshape(z.shape)
        assert np.abs(latents - z.numpy()).max() <= 3e-7  # randn.js is torch.randn
        images = np.array(result["data"], np.float32).reshape(result["dims"])
        want = torch.cat([gen.generate(1, s)[0] for s in seeds])
        assert np.abs(images - want.numpy()).max() <= TOLERANCE


# ------------------------------------------------------------------------------ the page


def test_grid_equals_ganops_sample_and_breeding_url_and_download(
    chromium, bundles, runs, serve, tmp_path
):
    url = serve(bundles["dcgan"]) + "#seed=40"
    page = open_page(chromium, url, accept_downloads=True)
    assert page.locator("#grid .tile").count() == 16
    # the page's seed 41 is `ganops sample RUN -n 1 --seed 41`, pixel for pixel (1 grey level)
    npy = tmp_path / "s.npy"
    subprocess.run(
        [GANOPS, "sample", str(runs["dcgan"]), "-n", "1", "--seed", "41", "-o", str(npy)],
        check=True,
        capture_output=True,
    )
    assert max_grey_diff(tile_pixels(page, 1), as_grey(torch.from_numpy(np.load(npy)))) <= 1
    gen = RunGenerator.from_run_dir(runs["dcgan"])
    for i in (0, 5, 15):
        assert max_grey_diff(tile_pixels(page, i), as_grey(gen.generate(1, 40 + i)[0])) <= 1
    parents = [tile_pixels(page, 2), tile_pixels(page, 9)]
    parent_z = [page.evaluate(f"window.explorer.latents({i})") for i in (2, 9)]

    # download a tile as PNG: the file holds the tile's pixels
    with page.expect_download() as dl:
        page.locator("#grid .tile").nth(2).locator("a").click()
    png = np.array(Image.open(dl.value.path()).convert("RGBA"))
    assert np.array_equal(png, parents[0])

    # pick two parents, breed: children differ from the parents and from each other
    page.locator("#grid .tile").nth(2).click()
    settle(page)
    page.locator("#grid .tile").nth(9).click()
    settle(page)
    page.evaluate(
        "(() => { const m = document.getElementById('mut'); m.value = '0.4';"
        " m.dispatchEvent(new Event('input')); })()"
    )
    page.click("#breed")
    settle(page)
    assert "gen=1" in page.url and "genes=" in page.url
    children = [tile_pixels(page, i) for i in range(16)]
    for c in children:
        for p in parents:
            assert np.abs(c.astype(int) - p.astype(int)).mean() > 1.0
    for i in range(16):
        for j in range(i + 1, 16):
            assert np.abs(children[i].astype(int) - children[j].astype(int)).mean() > 1.0
    # every child gene comes from the parents' genes (crossover) moved by the mutation
    z0 = np.array(page.evaluate("window.explorer.latents(0)"))
    a, b = (np.array(p) for p in parent_z)
    mixed = np.where(np.abs(z0 - np.sqrt(1 - 0.16) * a) < np.abs(z0 - np.sqrt(1 - 0.16) * b), a, b)
    assert np.abs(z0 - np.sqrt(1 - 0.16) * mixed).max() < 0.4 * 5  # noise of strength 0.4
    # a child's pixels are torch's for its latents (the genes the URL carries)
    gen_z = torch.tensor([page.evaluate("window.explorer.latents(3)")], dtype=torch.float32)
    want = generate_from_latents(gen.family, gen.nets, gen_z)
    assert max_grey_diff(tile_pixels(page, 3), as_grey(want)) <= 1

    # interpolate between two children: the strip runs from the first to the second
    page.locator("#grid .tile").nth(0).click()
    settle(page)
    page.locator("#grid .tile").nth(1).click()
    settle(page)
    page.click("#interp")
    settle(page)
    strip = page.locator("#strip canvas")
    assert strip.count() == 8
    ends = page.evaluate(
        "[0, 7].map(i => { const c = document.querySelectorAll('#strip canvas')[i];"
        " return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); })"
    )
    size = children[0].shape[0]
    assert max_grey_diff(np.array(ends[0], np.uint8).reshape(size, size, 4), children[0]) <= 1
    assert max_grey_diff(np.array(ends[1], np.uint8).reshape(size, size, 4), children[1]) <= 1

    # a direction slider moves the picked image
    before = page.evaluate(
        "Array.from(document.querySelector('#focus-tile canvas')"
        ".getContext('2d').getImageData(0, 0, 32, 32).data)"
    )
    page.evaluate(
        "(() => { const s = document.querySelector('#sliders input'); s.value = '3';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    settle(page)
    after = page.evaluate(
        "Array.from(document.querySelector('#focus-tile canvas')"
        ".getContext('2d').getImageData(0, 0, 32, 32).data)"
    )
    assert np.abs(np.array(before) - np.array(after)).mean() > 0.5
    assert "dirs=3" in page.url

    # the copied URL reproduces exactly what was seen, in a fresh page
    shown = [tile_pixels(page, i) for i in range(16)]
    again = open_page(chromium, page.url)
    for i in range(16):
        assert np.array_equal(tile_pixels(again, i), shown[i])
    assert again.locator("#strip canvas").count() == 8
    assert not page.blocked and not again.blocked  # nothing but 127.0.0.1 was asked for
    assert not [e for e in page.errors + again.errors if "favicon" not in e]


def test_conditional_class_and_stylegan_truncation(chromium, bundles, runs, serve):
    page = open_page(chromium, serve(bundles["cgan"]) + "#seed=3&cls=2")
    assert page.locator("#cls option").count() == 3
    gen = RunGenerator.from_run_dir(runs["cgan"])
    want = gen.generate(1, 4, labels=torch.tensor([2]))[0]
    assert max_grey_diff(tile_pixels(page, 1), as_grey(want)) <= 1
    page.select_option("#cls", "0")
    settle(page)
    assert max_grey_diff(tile_pixels(page, 1), as_grey(gen.generate(1, 4)[0])) <= 1

    page = open_page(chromium, serve(bundles["stylegan"]) + "#seed=10&psi=0.5")
    gen = RunGenerator.from_run_dir(runs["stylegan"])
    for i in (0, 7):
        want = gen.generate_styled(1, 10 + i, psi=0.5)
        assert max_grey_diff(tile_pixels(page, i), as_grey(want)) <= 1
    assert page.locator("#psi-box").is_visible()
    page.locator("#grid .tile").nth(0).click()
    settle(page)
    assert page.locator("#sliders input").count() == 8
    assert "W" in page.text_content("#dir-space")
    assert not page.blocked


@pytest.mark.parametrize("family", ["cyclegan", "srgan"])
def test_image_to_image_page_translates_an_uploaded_image(
    family, chromium, bundles, runs, serve, tmp_path
):
    gen = RunGenerator.from_run_dir(runs[family])
    x = gen.inputs(1, seed=3)  # (1, C, h, w) a real held-in input
    png = tmp_path / "input.png"
    Image.fromarray(to_uint8(x)[0, 0]).save(png)
    page = open_page(chromium, serve(bundles[family]))
    assert page.locator("#examples img").count() == 8
    page.set_input_files("#upload", str(png))
    page.wait_for_function(
        "document.body.dataset.ready === '1' && window.explorer.timings.translate"
    )
    settle(page)
    x = torch.from_numpy(to_uint8(x).astype(np.float32) / 127.5 - 1)
    want = generate_from_latents(gen.family, gen.nets, x)
    size = want.shape[-1]
    got = page.evaluate(
        "Array.from(document.getElementById('output-canvas').getContext('2d')"
        ".getImageData(0, 0, 99, 99).data)"
    )
    got = np.array(got, np.uint8).reshape(99, 99, 4)[:size, :size]
    assert page.evaluate("document.getElementById('output-canvas').width") == size
    assert max_grey_diff(got, as_grey(want)) <= 1
    assert not page.blocked


# ------------------------------------------------------------------------------ the command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_explore_command_serves_the_bundle(runs):
    port = free_port()
    proc = subprocess.Popen(
        [GANOPS, "explore", str(runs["dcgan"]), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/explorer.json") as r:
                    info = json.loads(r.read())
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.time() < deadline
                time.sleep(0.5)
        assert info["family"] == "dcgan" and info["kind"] == "latent"
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/ort/ort-wasm-simd-threaded.wasm"
        ) as r:
            assert r.headers["Content-Type"] == "application/wasm"
        # a second explorer on the same port is refused in one line
        busy = subprocess.run(
            [GANOPS, "explore", str(runs["dcgan"]), "--port", str(port)],
            capture_output=True,
            text=True,
        )
        assert busy.returncode == 2
        assert busy.stderr.strip().count("\n") == 0 and f"--port {port}" in busy.stderr
        assert "Traceback" not in busy.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_input_is_one_line(runs, tmp_path):
    empty = tmp_path / "run"
    (empty / "checkpoints").mkdir(parents=True)
    for args, needle in (
        ([str(empty), "--export", str(tmp_path / "b")], "holds no generator"),
        ([str(tmp_path / "nowhere"), "--export", str(tmp_path / "b")], "no such run folder"),
        ([str(runs["dcgan"]), "--export", str(ROOT / "tests")], "not an explorer bundle"),
    ):
        r = subprocess.run([GANOPS, "explore", *args], capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert needle in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert not (tmp_path / "b").exists()


def test_a_generator_that_cannot_export_is_a_clear_error_and_leaves_nothing(runs, tmp_path):
    gen = RunGenerator.from_run_dir(runs["dcgan"])

    def through_numpy(nets, z, labels=None):  # leaves the graph: no exporter can follow it
        return torch.from_numpy(np.tanh(z.numpy()[:, :1, None, None].repeat(32, 2).repeat(32, 3)))

    gen.family = Family(
        name="numpy-gan",
        description="a generator that computes in numpy",
        paper="-",
        build=gen.family.build,
        phases=gen.family.phases,
        generate=through_numpy,
    )
    with pytest.raises(GanopsError, match="cannot export this generator to ONNX"):
        write_bundle(gen, tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []  # no half-written bundle


def test_image_bundle_describes_its_inputs(bundles):
    info = json.loads((bundles["srgan"] / "explorer.json").read_text())
    assert info["kind"] == "image" and info["input_size"] * 2 == info["image_size"]
    for name in info["examples"]:
        png = Image.open(io.BytesIO((bundles["srgan"] / name).read_bytes()))
        assert png.size == (info["input_size"], info["input_size"]) and png.mode == "L"


# ------------------------------------------------------------------------------ the registry


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, pytestconfig):
    return shared_mlflow_server(tmp_path_factory, pytestconfig)


def test_every_registered_model_carries_its_explorer(
    mlflow_server, runs, chromium, serve, tmp_path
):
    import mlflow

    run = evaluated_copy(runs["cgan"], tmp_path / "run", metrics_json(50.0, 48.0, 52.0))
    mv = register_run(run, model_name="explore-bars", tracking_uri=mlflow_server)
    with using_tracking_uri(mlflow_server):
        local = mlflow.artifacts.download_artifacts(
            f"models:/explore-bars/{mv.version}", dst_path=str(tmp_path / "model")
        )
    (bundle,) = {p.parent for p in Path(local).rglob("explorer.json")}
    assert bundle.name == "explorer"
    for f in ("index.html", "explorer.js", "generator.onnx", "ort/ort-wasm-simd-threaded.wasm"):
        assert (bundle / f).is_file(), f
    # the downloaded bundle works as it is: the page shows the registered generator's images
    page = open_page(chromium, serve(bundle) + "#seed=5&cls=1")
    gen = RunGenerator.from_run_dir(runs["cgan"])
    assert (
        max_grey_diff(tile_pixels(page, 0), as_grey(gen.generate(1, 5, torch.tensor([1]))[0])) <= 1
    )
    # and `ganops explore models:/...` exports the same generator again
    out = tmp_path / "again"
    r = subprocess.run(
        [GANOPS, "explore", f"models:/explore-bars/{mv.version}", "--export", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server},
    )
    assert r.returncode == 0, r.stderr
    assert (out / "generator.onnx").read_bytes() == (bundle / "generator.onnx").read_bytes()
