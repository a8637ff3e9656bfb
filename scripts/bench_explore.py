"""The explorer in headless Chromium: bundle size, time to first image, time for a 64-image grid.

For the small presets' DCGAN-32 and StyleGAN (architecture as trained by `make demo`, weights
as initialised: the time does not depend on them), with torch on the same CPU as the reference
in the same run. Run with `make bench-explore`; prints a markdown table.

    .venv/bin/python scripts/bench_explore.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the one Chromium launcher the browser tests use

from browser import chromium, offline  # noqa: E402

from gan_models.config import TrainParams, load_params  # noqa: E402
from gan_models.explore.bundle import bundle_size, write_bundle  # noqa: E402
from gan_models.explore.server import make_server  # noqa: E402
from gan_models.families import get_family  # noqa: E402
from gan_models.families.base import DataSpec  # noqa: E402
from gan_models.sampling import RunGenerator  # noqa: E402

PRESETS = {"DCGAN-32": "dcgan-mnist5k-small.yaml", "StyleGAN-32": "stylegan-mnist5k-small.yaml"}


def generator(preset: str) -> RunGenerator:
    params = load_params(ROOT / "params" / preset, TrainParams)
    spec = DataSpec(channels=1, image_size=params.data.image_size, num_classes=None)
    family = get_family(params.model.family)
    torch.manual_seed(0)
    nets = {k: m.eval() for k, m in family.build(params, spec).items()}
    return RunGenerator(family, params, spec, nets, preset)


def measure(browser, url: str) -> tuple[float, float]:
    context = browser.new_context()
    refused = offline(context)
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=300_000)
    t = page.evaluate("window.explorer.timings")
    assert not refused, refused
    context.close()
    return t["firstImage"], t["grid"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the page runs single-threaded WebAssembly: compare like with like
    rows = []
    with tempfile.TemporaryDirectory() as tmp, chromium() as browser:
        for name, preset in PRESETS.items():
            gen = generator(preset)
            t0 = time.perf_counter()
            write_bundle(gen, Path(tmp) / name)
            export_s = time.perf_counter() - t0
            server = make_server("127.0.0.1", 0, Path(tmp) / name)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{server.server_address[1]}/#n=64&seed=0"
            runs = [measure(browser, url) for _ in range(args.repeats)]
            server.shutdown()
            server.server_close()
            torch_s = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                gen.generate(64, 0)
                torch_s.append(time.perf_counter() - t0)
            first = statistics.median(r[0] for r in runs)
            grid = statistics.median(r[1] for r in runs)
            ref = statistics.median(torch_s) * 1000
            size = bundle_size(Path(tmp) / name)
            model = sum(f.stat().st_size for f in (Path(tmp) / name).glob("*.onnx"))
            rows.append((name, size, model, export_s, first, grid, ref))
    print(
        "| generator | bundle (MB) | of which model (MB) | export (s) | first image (ms) "
        "| 64-image grid (ms) | torch, 1 thread (ms) | grid / torch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, size, model, export_s, first, grid, ref in rows:
        print(
            f"| {name} | {size / 1e6:.1f} | {model / 1e6:.2f} | {export_s:.1f} | {first:.0f} "
            f"| {grid:.0f} | {ref:.0f} | {grid / ref:.2f}x |"
        )


if __name__ == "__main__":
    main()
