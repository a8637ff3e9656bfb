"""Peak memory of ``ganops data fetch folder`` and ``ganops data preprocess`` against set size.

For each size N: a folder of N generated 64x64 colour PNGs in 10 class sub-folders, then three
commands, each in a fresh child process whose peak RSS (``ru_maxrss`` from ``os.wait4``) and
wall time are recorded: ``ganops data fetch folder`` of the PNGs, ``ganops data fetch folder``
of the fetched ``images.npy`` (the array-file import), and ``ganops data preprocess`` of the
fetched set at 64x64. Reports each figure and the ratio largest/smallest size (target: at most
about 1.15). Start at 5,000 images or more: below that, preprocess's window of chunks in flight
(two per thread, ``chunk_size`` 1,024 images each) never fills, so its peak is lower for a
reason other than the set's size. Run from the repository root::

    PYTHONPATH=. .venv/bin/python scripts/bench_data_prep.py --size 5000 --size 50000
    PYTHONPATH=. .venv/bin/python scripts/bench_data_prep.py --size 100 --size 400 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
STEPS = ("fetch_folder", "fetch_npy", "preprocess")
_GANOPS = "import sys; from gan_models.cli import main; sys.exit(main(sys.argv[1:]))"


def write_png_folder(root: Path, n: int, size: int = 64, classes: int = 10) -> None:
    """``n`` seeded 64x64 colour PNGs (smooth gradients plus noise) in ``classes`` folders."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a, b, c = rng.random(3, dtype=np.float32)
        base = np.stack([xx * a, yy * b, (xx + yy) * c / 2], axis=-1) * (255 / size)
        noise = rng.integers(0, 32, (size, size, 3), dtype=np.uint8)
        im = (base.astype(np.uint8) // 2 + noise).astype(np.uint8)
        Image.fromarray(im).save(root / f"class{i % classes}" / f"{i:07d}.png", compress_level=1)


def run_child(args: list[str]) -> dict[str, float]:
    """``ganops ARGS`` in a child process: its peak RSS (MB) and wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _GANOPS, *args],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"ganops {' '.join(args)} failed:\n{err.read().decode()[-2000:]}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1)}


def bench(sizes: list[int], workdir: str | None) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="ganops-bench-prep-", dir=workdir))
    result: dict[str, object] = {"benchmark": "data-prep", "image": "64x64 colour PNG"}
    rows: dict[str, dict[str, object]] = {}
    try:
        for n in sizes:
            pngs, raw, out = tmp / f"png{n}", tmp / "raw", tmp / "processed"
            t0 = time.perf_counter()
            write_png_folder(pngs, n)
            row: dict[str, object] = {"generate_seconds": round(time.perf_counter() - t0, 1)}
            name = f"prep{n}"
            row["fetch_folder"] = run_child(
                ["data", "fetch", "folder", "--name", name, "--path", str(pngs),
                 "--out-root", str(raw)]
            )  # fmt: skip
            shutil.rmtree(pngs)
            row["fetch_npy"] = run_child(
                ["data", "fetch", "folder", "--name", f"{name}-npy", "--path",
                 str(raw / name / "images.npy"), "--out-root", str(raw)]
            )  # fmt: skip
            shutil.rmtree(raw / f"{name}-npy")
            row["preprocess"] = run_child(
                ["data", "preprocess", name, "--raw-root", str(raw), "--out-root", str(out),
                 "--set", "image_size=64", "--set", "progress=false"]
            )  # fmt: skip
            row["raw_images_mb"] = round((raw / name / "images.npy").stat().st_size / 2**20, 1)
            shutil.rmtree(raw / name)
            shutil.rmtree(out / name)
            rows[str(n)] = row
            print(f"{n} images: {json.dumps(row)}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["sizes"] = rows
    small, large = rows[str(sizes[0])], rows[str(sizes[-1])]
    result["ratio"] = {
        step: round(large[step]["peak_rss_mb"] / small[step]["peak_rss_mb"], 3)  # type: ignore[index]
        for step in STEPS
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, action="append", help="images per set (repeat)")
    ap.add_argument("--workdir", default=None, help="where the generated sets go (default /tmp)")
    ap.add_argument("--json", default=None, help="also write the result to this file")
    args = ap.parse_args()
    sizes = args.size or [5_000, 50_000]
    if min(sizes) < 100:
        ap.error("--size: at least 100 images per set (the splits need some of each class)")
    result = bench(sizes, args.workdir)
    rows = result["sizes"]
    for step in STEPS:
        mb = ", ".join(f"{n}: {rows[str(n)][step]['peak_rss_mb']:.0f} MB" for n in sizes)  # type: ignore[index]
        ratio = result["ratio"][step]  # type: ignore[index]
        print(f"peak RSS {step}: {mb}; {sizes[-1]} / {sizes[0]} images = {ratio:.3f}")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
