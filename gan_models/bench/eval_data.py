"""Reference statistics and the features stage on data larger than memory: peak RSS against
the split's size."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np


def write_processed_set(root: str, n: int, n_test: int = 1000, size: int = 64) -> None:
    """A processed dataset: train (``n``) and test (``n_test``) splits of seeded uint8 colour
    images in 10 classes (a bar whose position and colour say the class), written in chunks."""
    from pathlib import Path

    from gan_models.data.format import FORMAT_VERSION, finish_imageset
    from gan_models.data.stream import NpyWriter

    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", n_test)):
        path = Path(root) / split
        path.mkdir(parents=True)
        labels = np.arange(count) % 10
        writer = NpyWriter(path / "images.npy", (count, 3, size, size), np.uint8)
        for start in range(0, count, 4096):
            y = labels[start : start + 4096]
            x = rng.integers(0, 96, (len(y), 3, size, size), dtype=np.uint8)
            for i, c in enumerate(y):
                x[i, c % 3, :, 6 * c : 6 * c + 4] = 240
            writer.write(x)
        writer.close()
        meta = {"name": f"bench/{split}", "source": "synthetic", "kind": "images",
                "format_version": FORMAT_VERSION, "num_classes": 10,
                "arrays": {"images": [count, 3, size, size]}}  # fmt: skip
        finish_imageset(path, meta, labels=labels)


_EVAL_DATA_CHILD = """
import json, resource, sys
from pathlib import Path
step, mode, root, out, steps = sys.argv[1:6]
from gan_models.data.splits import load_split, open_split
from gan_models.metrics.domain_classifier import load_domain_classifier, train_domain_classifier
from gan_models.metrics.reference import reference_stats
split = open_split if mode == "stream" else load_split
if step == "features":
    card = train_domain_classifier(
        split(root, "train"), split(root, "test"), Path(out) / "classifier",
        batch_size=64, width=8, hidden=64, max_steps=int(steps),
    )
    r = {"sha256": card["sha256"], "test_accuracy": card["test_accuracy"]}
else:
    ext = load_domain_classifier(Path(out) / "classifier", batch_size=256)
    ref = reference_stats(split(root, "train").images, ext, split="bench/train",
                          cache_dir=Path(out) / "cache")
    r = {"key": ref.key, "n": ref.n}
r["max_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(r))
"""


def _eval_data_child(step: str, mode: str, root: str, out: str, steps: int) -> dict[str, Any]:
    """One step of :func:`bench_eval_data` in a fresh child process: its peak RSS and seconds."""
    import json
    import subprocess
    import sys

    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _EVAL_DATA_CHILD, step, mode, root, out, str(steps)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"bench eval-data: {step} ({mode}) failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"peak_rss_mb": round(r.pop("max_rss_kb") / 1024, 1),
            "seconds": round(time.perf_counter() - t0, 1), **r}  # fmt: skip


def bench_eval_data(
    sizes: tuple[int, ...] = (10_000, 100_000),
    steps: int = 200,
    in_memory: bool = False,
    workdir: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Peak RSS of the features stage and of reference statistics on generated processed 64x64
    colour sets of each size, each in a fresh child process.

    ``features``: the domain classifier's training on the splits opened as ``train_features``
    opens them (the train split's content hash, ``steps`` seeded batches gathered from the file
    (the stage runs whole epochs; memory does not grow with steps), the test split's accuracy);
    ``reference``: ``reference_stats`` of the whole train split with that classifier. With
    ``in_memory`` both also run on the splits loaded whole in float32 (``load_split``), as
    before streaming. ``*_ratio``: peak RSS at the largest size over that at the smallest.
    """
    import shutil
    from pathlib import Path

    modes = ("stream", "memory") if in_memory else ("stream",)
    sizes = tuple(sorted(sizes))
    result: dict[str, Any] = {"benchmark": "eval-data", "classifier_steps": steps, "sizes": {}}
    tmp = Path(tempfile.mkdtemp(prefix="ganops-bench-eval-data-", dir=workdir))
    try:
        for n in sizes:
            root = tmp / f"set{n}"
            write_processed_set(str(root), n)
            entry: dict[str, Any] = {"train_mb_uint8": round(n * 3 * 64 * 64 / 2**20, 1)}
            for mode in modes:
                out = tmp / f"out{n}-{mode}"
                for step in ("features", "reference"):
                    entry[f"{step}_{mode}"] = r = _eval_data_child(
                        step, mode, str(root), str(out), steps
                    )
                    if log is not None:
                        log(f"{n} images, {step} ({mode}): {r}")
                shutil.rmtree(out)
            result["sizes"][str(n)] = entry
            shutil.rmtree(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    small, large = result["sizes"][str(sizes[0])], result["sizes"][str(sizes[-1])]
    for step in ("features", "reference"):
        a, b = small[f"{step}_stream"]["peak_rss_mb"], large[f"{step}_stream"]["peak_rss_mb"]
        result[f"{step}_ratio"] = round(b / a, 4)
    return result
