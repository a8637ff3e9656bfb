"""``ganops bench tune``: the same study unpruned and under one or more pruners, in one invocation.

All studies use the random sampler with the same seed, so they propose the same configurations
in the same order; a pruned one stops trials early (see ``PrunerConfig`` for the rules).
Reported per pruned study: the steps and trial seconds it spent as a ratio of the unpruned
study's, and its best trial's FID, evaluated after the study with ``evaluate_run`` (bootstrap
95% CI), against the unpruned best's CI.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gan_models.tuning.controller import run_study
from gan_models.tuning.inputs import load_tuning


def bench_tune(
    base: str | Path = "params/train.yaml",
    tune_params: str | Path = "params/tune.yaml",
    *,
    trials: int = 8,
    steps: int = 600,
    fid_every: int = 150,
    seed: int = 0,
    pruners: list[str] | tuple[str, ...] | None = None,
    overrides: list[str] | None = None,
    echo=print,
) -> dict[str, Any]:
    """``out["unpruned"]`` and ``out["pruned"][pruner]`` (the latter with the ratios);
    ``pruners`` None = the default pruner of ``tune.pruner``."""
    from gan_models.config import load_section
    from gan_models.evaluation import evaluate_run
    from gan_models.metrics.config import EvaluateParams, FeaturesParams
    from gan_models.tuning.config import PrunerConfig

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
    ev = load_section("params/evaluate.yaml", "evaluate", EvaluateParams)
    feats = load_section("params/features.yaml", "features", FeaturesParams)

    def study(label: str, kind: str) -> dict[str, Any]:
        tuning = load_tuning(
            base,
            tune_params,
            [*common, f"tune.pruner.type={kind}"],
            study=f"bench-{label}-{stamp}",
            trials=trials,
            track=False,
        )
        began = time.perf_counter()
        report = run_study(tuning, out=None, echo=lambda s: echo(f"[{label}] {s}"))
        wall = time.perf_counter() - began
        assert report.best is not None, f"{label}: no trial completed"
        result = evaluate_run(
            report.best["run_dir"], features=feats, evaluate=ev, untrained_baseline=False
        )
        fid = result["fid"]
        return {
            "study": tuning.study_name,
            "pruner": tuning.tune.pruner.model_dump() if tuning.tune.prunes else None,
            "wall_s": round(wall, 1),
            "steps_trained": report.steps_trained,
            "trial_seconds": report.seconds,
            "counts": report.counts(),
            "pruned_at": sorted(
                t["pruned_at"] for t in report.trials if t.get("pruned_at") is not None
            ),
            "best_trial": report.best["number"],
            "best_params": report.best["params"],
            "best_training_fid": report.best["fid"],
            "best_fid": fid["value"],
            "best_fid_ci": [fid["ci95"]["low"], fid["ci95"]["high"]],
        }

    out: dict[str, Any] = {"trials": trials, "steps": steps, "fid_every": fid_every}
    u = out["unpruned"] = study("unpruned", "none")
    lo, hi = u["best_fid_ci"]
    out["pruned"] = {}
    for kind in pruners or [PrunerConfig().type]:
        p = out["pruned"][kind] = study(kind, kind)
        p["steps_ratio"] = round(p["steps_trained"] / u["steps_trained"], 3)
        p["seconds_ratio"] = round(p["trial_seconds"] / u["trial_seconds"], 3)
        p["best_within_unpruned_ci"] = bool(lo <= p["best_fid"] <= hi)
    return out
