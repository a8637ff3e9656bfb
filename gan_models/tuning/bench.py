"""``ganops bench tune``: the same study pruned and unpruned, in one invocation.

Both studies use the random sampler with the same seed, so they propose the same configurations
in the same order; the pruned one stops trials early: the median pruner those whose FID is worse
than the median of the trials before it at the same step, Hyperband all but the best third at
each rung. Reported: the steps and seconds each spent, and the best trial's
FID, evaluated after the study with ``evaluate_run`` (bootstrap 95% CI).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gan_models.tuning.study import load_tuning, run_study


def bench_tune(
    base: str | Path = "params/train.yaml",
    tune_params: str | Path = "params/tune.yaml",
    *,
    trials: int = 8,
    steps: int = 600,
    fid_every: int = 150,
    seed: int = 0,
    pruner: str = "median",
    overrides: list[str] | None = None,
    echo=print,
) -> dict[str, Any]:
    from gan_models.config import load_section
    from gan_models.evaluation import evaluate_run
    from gan_models.metrics.config import EvaluateParams, FeaturesParams

    common = [
        f"tune.budget.train.steps={steps}",
        f"tune.budget.train.fid_every={fid_every}",
        f"tune.budget.train.checkpoint_every={fid_every}",
        "tune.sampler.type=random",
        f"tune.sampler.seed={seed}",
        "tune.workers=1",
        "tune.pool=null",
        "tune.budget.train.progress=false",
        *(overrides or []),
    ]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out: dict[str, Any] = {"trials": trials, "steps": steps, "fid_every": fid_every}
    out["pruner"] = pruner
    for label, kind in (("unpruned", "none"), ("pruned", pruner)):
        tuning = load_tuning(
            base,
            tune_params,
            [*common, f"tune.pruner.type={kind}"],
            study=f"bench-{label}-{stamp}",
            trials=trials,
            track=False,
        )
        began = time.perf_counter()
        report = run_study(tuning, out=None, echo=lambda s, lb=label: echo(f"[{lb}] {s}"))
        wall = time.perf_counter() - began
        assert report.best is not None, f"{label}: no trial completed"
        ev = load_section("params/evaluate.yaml", "evaluate", EvaluateParams)
        feats = load_section("params/features.yaml", "features", FeaturesParams)
        result = evaluate_run(
            report.best["run_dir"], features=feats, evaluate=ev, untrained_baseline=False
        )
        fid = result["fid"]
        out[label] = {
            "study": tuning.study_name,
            "wall_s": round(wall, 1),
            "steps_trained": report.steps_trained,
            "trial_seconds": report.seconds,
            "counts": report.counts(),
            "best_trial": report.best["number"],
            "best_params": report.best["params"],
            "best_training_fid": report.best["fid"],
            "best_fid": fid["value"],
            "best_fid_ci": [fid["ci95"]["low"], fid["ci95"]["high"]],
        }
    u, p = out["unpruned"], out["pruned"]
    out["steps_ratio"] = round(p["steps_trained"] / u["steps_trained"], 3)
    out["seconds_ratio"] = round(p["trial_seconds"] / u["trial_seconds"], 3)
    lo, hi = u["best_fid_ci"]
    out["pruned_best_within_unpruned_ci"] = lo <= p["best_fid"] <= hi
    return out
