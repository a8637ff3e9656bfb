"""Evaluation throughput: a whole evaluation against the forward work alone."""

from __future__ import annotations

import time
from typing import Any

import torch


def bench_eval(
    run_dir: str = "runs/demo",
    features_dir: str | None = None,
    n_samples: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Images/s of a whole evaluation (generate + extract + every metric) on ``n_samples``.

    The reference is the bare forward work in the same process: generating the samples and
    extracting their features, without any metric. The reference split's statistics are
    computed once before timing (they are cached on disk in normal use).
    """
    from gan_models.data.splits import dataset_name, open_split
    from gan_models.metrics.config import EvaluateParams, FeaturesParams
    from gan_models.metrics.evaluate import evaluate_generator
    from gan_models.metrics.extractors import extractor_for
    from gan_models.sampling import RunGenerator

    gen = RunGenerator.from_run_dir(run_dir)
    root = gen.params.data.path
    size = gen.spec.image_size
    # read from disk a batch at a time, as the evaluation stage reads them
    train_split, test_split = open_split(root, "train", size), open_split(root, "test", size)
    extractor = extractor_for(FeaturesParams(), dataset_name(gen.params), features_dir)
    kwargs = EvaluateParams(n_samples=n_samples, seed=seed).evaluate_kwargs()
    kwargs.update(cas=False)

    def run() -> dict[str, Any]:
        return evaluate_generator(
            lambda n, s: gen.generate(n, s),
            extractor=extractor,
            real_train=train_split,
            real_test=test_split,
            **kwargs,
        )

    run()  # warm: reference statistics into the cache, allocator, threads
    t0 = time.perf_counter()
    result = run()
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    images, _ = gen.generate(n_samples, seed)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    extractor.features_and_logits(images)
    extract_s = time.perf_counter() - t0
    return {
        "benchmark": "eval",
        "run_dir": str(run_dir),
        "family": gen.family.name,
        "extractor": extractor.name,
        "n_samples": n_samples,
        "threads": torch.get_num_threads(),
        "seconds": round(full_s, 3),
        "generate_seconds": round(gen_s, 3),
        "extract_seconds": round(extract_s, 3),
        "images_per_s": round(n_samples / full_s, 1),
        "forward_only_images_per_s": round(n_samples / (gen_s + extract_s), 1),
        "ratio": round((gen_s + extract_s) / full_s, 4),
        "fid": round(result["fid"]["value"], 4),
    }
