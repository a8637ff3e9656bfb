"""The augmentation experiment, end to end: subsets, generators, classifiers, report, MLflow.

One MLflow parent run per experiment holds the report (table, plot, conclusion, metrics); the
generators' training runs and one child run per arm are nested under it. Arms and ratios come
from the params file, fixed before anything is trained; the classifier is trained for a fixed
number of steps with fixed hyperparameters and is never tuned or stopped on the test split,
which is read only to score each finished classifier.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gan_models.augment.classifier import accuracy, train_classifier
from gan_models.augment.config import Arm, AugmentParams, as_dict
from gan_models.augment.report import (
    conclusion,
    plot_csv,
    plot_figure,
    summarise,
    table_markdown,
)
from gan_models.augment.subsets import labelled_split, subset_indices, write_subset
from gan_models.config import load_params
from gan_models.data.splits import to_model_range
from gan_models.errors import ConfigError
from gan_models.utils.determinism import pinned_threads
from gan_models.utils.io import atomic_path

# Seeds of the synthetic draws are offset from the classifier seeds so the two never share a
# stream.
SYNTHETIC_SEED = 10_000


@dataclass
class Paths:
    name: str
    runs: Path
    out: Path

    def subset(self, k: int) -> Path:
        return self.runs / "subsets" / f"{self.name}-k{k}"

    def generator(self, k: int) -> Path:
        return self.runs / "generators" / f"k{k}"


def paths_for(params: AugmentParams) -> Paths:
    name = Path(params.data).name
    return Paths(name, Path(params.runs) / name, Path(params.out) / name)


def generator_params(params: AugmentParams, subset: Path):
    """The generator's TrainParams on ``subset``; refused unless its family is conditional."""
    from gan_models.families import get_family
    from gan_models.training.params import TrainParams

    g = params.generator
    if not Path(g.params).is_file():
        raise ConfigError(f"augment.generator.params: {g.params} does not exist")
    tp = load_params(g.params, TrainParams, [*g.set, f"data.path={subset}", "data.split=train"])
    if not get_family(tp.model.family).conditional:
        raise ConfigError(
            f"augment.generator.params: {g.params} trains the {tp.model.family} family, which is "
            "not conditional; the experiment needs labelled samples (e.g. the cgan family)"
        )
    return tp


def check_inputs(params: AugmentParams) -> None:
    """Everything that can be refused before anything trains."""
    source = Path(params.data)
    train = labelled_split(source, "train")
    labelled_split(source, "test")
    # refuses a k larger than the smallest class, naming it
    subset_indices(train.labels, max(params.k), params.subset_seed, f"train split of {source}")
    if params.needs_generator():
        tp = generator_params(params, Path(params.data))
        n = min(params.k) * len(np.unique(train.labels))
        if tp.train.batch_size > n:
            raise ConfigError(
                f"augment.k: k={min(params.k)} gives {n} images, fewer than the generator's "
                f"train.batch_size {tp.train.batch_size}; add train.batch_size={n} (or less) "
                "to augment.generator.set"
            )


def _train_generator(
    params: AugmentParams, paths: Paths, k: int, tracking_uri: str, echo: Callable[[str], None]
) -> dict[str, Any]:
    """Train (or reuse), evaluate and register the conditional generator of subset k."""
    from gan_models.evaluation import evaluate_run
    from gan_models.metrics.config import EvaluateParams, FeaturesParams
    from gan_models.metrics.extractors import FEATURES_ROOT
    from gan_models.tracking.registry import register_run
    from gan_models.tracking.training_run import tracked_train
    from gan_models.training.params import load_run_config

    subset, run_dir = paths.subset(k), paths.generator(k)
    tp = generator_params(params, subset)
    done = (run_dir / "generator.safetensors").is_file() and (run_dir / "config.yaml").is_file()
    if done and load_run_config(run_dir / "config.yaml").digest() == tp.digest():
        echo(f"k={k}: generator already trained with these params ({run_dir})")
        seconds = None
    else:
        t0 = time.perf_counter()
        tracked_train(
            tp,
            run_dir,
            resume="auto",
            tracking_uri=tracking_uri,
            experiment=params.experiment,
            run_name=f"{tp.model.family}-{paths.name}-k{k}",
            log_system_metrics=False,
            tags={"augment.k": str(k)},
        )
        seconds = time.perf_counter() - t0
        (run_dir / "metrics.json").unlink(missing_ok=True)
        (run_dir / "registered.json").unlink(missing_ok=True)
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
    else:
        features_dir = params.features_dir or str(FEATURES_ROOT / paths.name)
        metrics = evaluate_run(
            run_dir,
            features=FeaturesParams(),
            evaluate=EvaluateParams(n_samples=params.generator.n_samples),
            features_dir=features_dir,
        )
    out = {
        "run_dir": str(run_dir),
        "train_seconds": seconds,
        "fid": metrics["fid"]["value"],
        "fid_ci95": metrics["fid"].get("ci95"),
        "cas": (metrics.get("cas") or {}).get("accuracy"),
    }
    if params.generator.register_model:
        record = run_dir / "registered.json"  # this generator's version, once registered
        if seconds is None and record.is_file():
            out["registered"] = json.loads(record.read_text())["version"]
        else:
            mv = register_run(run_dir, tracking_uri=tracking_uri)
            out["registered"] = f"{mv.name} v{mv.version}"
            with atomic_path(record) as tmp:
                tmp.write_text(json.dumps({"version": out["registered"]}) + "\n")
    return out


def _synthetic_pool(
    run_dir: Path, per_class: int, num_classes: int, seed: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` images of every class from the run's generator, class by class in blocks
    so that the first n of each class are the same whatever ``per_class`` is."""
    from gan_models.sampling import RunGenerator

    gen = RunGenerator.from_run_dir(run_dir)
    labels = torch.arange(num_classes).repeat(per_class)  # round-robin: 0..K-1, 0..K-1, ...
    images, _ = gen.generate(len(labels), seed, labels=labels)
    if images.shape[-1] != size:
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return images, labels


def _arm_data(
    arm: Arm,
    k: int,
    real: tuple[torch.Tensor, torch.Tensor],
    pool: tuple[torch.Tensor, torch.Tensor] | None,
    num_classes: int,
):
    """The arm's training set: the real subset and/or the first ratio x k synthetic per class."""
    xs, ys = [], []
    if arm.real:
        xs.append(real[0])
        ys.append(real[1])
    if arm.ratio:
        assert pool is not None
        n = int(round(arm.ratio * k)) * num_classes  # the pool is round-robin over classes
        xs.append(pool[0][:n])
        ys.append(pool[1][:n])
    return torch.cat(xs), torch.cat(ys)


def _fit_one(
    job: tuple, test: tuple[torch.Tensor, torch.Tensor], num_classes: int, params: AugmentParams
) -> float:
    """Train one arm's classifier for one seed and score it on the test split."""
    _, seed, classical, x, y = job
    with pinned_threads(True):  # one thread: the same numbers on any core count
        model = train_classifier(
            x,
            y,
            num_classes=num_classes,
            p=params.classifier,
            seed=seed,
            classical=params.classical if classical else None,
        )
        return accuracy(model, *test)


def _fit_all(
    jobs: list[tuple], test, num_classes: int, params: AugmentParams, workers: int
) -> list[float]:
    """Every job's accuracy, in job order: in this process, or in ``workers`` processes (each
    single-threaded, so the numbers are the same either way)."""
    fit = partial(_fit_one, test=test, num_classes=num_classes, params=params)
    if workers <= 1 or len(jobs) == 1:
        return [fit(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(fit, jobs))


def run_experiment(
    params: AugmentParams,
    *,
    tracking_uri: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every k, arm and seed; write the report to ``params.out``/NAME and MLflow."""
    import mlflow

    from gan_models.tracking.store import (
        check_reachable,
        ensure_experiment,
        resolve_tracking_uri,
        using_tracking_uri,
    )

    check_inputs(params)
    paths = paths_for(params)
    source = Path(params.data)
    test = labelled_split(source, "test")
    size = int(test.images.shape[-1])
    test_x = to_model_range(np.array(test.images), None)  # (N, C, S, S) in [-1, 1]
    test_y = torch.from_numpy(np.asarray(test.labels))
    num_classes = int(test.meta.get("num_classes") or int(test_y.max()) + 1)
    arms = params.expanded_arms()
    workers = params.workers or min(len(os.sched_getaffinity(0)), 8)
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    results: dict[int, dict[str, list[float]]] = {}
    generators: dict[str, Any] = {}
    t_start = time.perf_counter()
    with using_tracking_uri(uri):
        exp_id = ensure_experiment(params.experiment, uri)
        with mlflow.start_run(
            experiment_id=exp_id, run_name=f"augment-{paths.name}", log_system_metrics=False
        ) as parent:
            mlflow.log_dict(as_dict(params), "augment_params.json")
            mlflow.set_tags({"ganops.kind": "augment", "ganops.dataset": paths.name})
            for k in params.k:
                manifest = write_subset(source, paths.subset(k), k, params.subset_seed)
                echo(f"k={k}: subset of {manifest['count']} images ({paths.subset(k)})")
                sub = labelled_split(paths.subset(k), "train")
                real = (
                    to_model_range(np.array(sub.images), size),
                    torch.from_numpy(np.asarray(sub.labels)),
                )
                if params.needs_generator():
                    generators[f"k{k}"] = g = _train_generator(params, paths, k, uri, echo)
                    echo(
                        f"k={k}: generator FID {g['fid']:.1f}"
                        + (f", registered {g['registered']}" if "registered" in g else "")
                    )
                per_class = int(math.ceil(max(params.ratios) * k))
                jobs = []
                for seed in range(params.seeds):
                    pool = None
                    if params.needs_generator():
                        pool = _synthetic_pool(
                            paths.generator(k), per_class, num_classes, SYNTHETIC_SEED + seed, size
                        )
                    for arm in arms:
                        x, y = _arm_data(arm, k, real, pool, num_classes)
                        jobs.append((arm.name, seed, arm.classical, x, y))
                t0 = time.perf_counter()
                accs = _fit_all(jobs, (test_x, test_y), num_classes, params, workers)
                results[k] = {a.name: [] for a in arms}
                for (name, *_), acc in zip(jobs, accs, strict=True):
                    results[k][name].append(acc)  # jobs are in seed order within each arm
                echo(
                    f"k={k}: {len(jobs)} classifiers in {time.perf_counter() - t0:.0f} s: "
                    + ", ".join(f"{a.name} {100 * np.mean(results[k][a.name]):.1f}%" for a in arms)
                )
            report = write_report(
                params, paths, arms, results, generators, seconds=time.perf_counter() - t_start
            )
            _log_mlflow(parent.info.run_id, exp_id, arms, report, paths)
    echo(report["conclusion"])
    return report


def write_report(
    params: AugmentParams,
    paths: Paths,
    arms: list[Arm],
    results: dict[int, dict[str, list[float]]],
    generators: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """metrics.json (dvc metrics), accuracy.csv (dvc plots), table.md, conclusion.md, the
    plot and results.json (every seed's accuracy) in ``paths.out``, each written atomically."""
    names = [a.name for a in arms]
    summary = summarise(results)
    table = table_markdown(summary, names, {a.name: a.describe() for a in arms})
    text = conclusion(summary, names, params.seeds)
    paths.out.mkdir(parents=True, exist_ok=True)
    metrics = {
        k: {
            a: {m: round(v, 4) for m, v in e.items() if isinstance(v, float)}
            for a, e in row.items()
        }
        for k, row in summary.items()
    }
    files = {
        "metrics.json": json.dumps(metrics, indent=2, sort_keys=True) + "\n",
        "accuracy.csv": plot_csv(summary, names),
        "table.md": table,
        "conclusion.md": text,
        "results.json": json.dumps(
            {
                "summary": summary,
                "generators": generators,
                "arms": names,
                "params": as_dict(params),
            },
            indent=2,
            sort_keys=True,
        )
        + "\n",
    }
    for fname, body in files.items():
        with atomic_path(paths.out / fname) as tmp:
            Path(tmp).write_text(body)
    fig = plot_figure(summary, names, f"{paths.name}: downstream classifier accuracy by arm")
    with atomic_path(paths.out / "accuracy.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return {
        "summary": summary,
        "table": table,
        "conclusion": text,
        "generators": generators,
        "out": str(paths.out),
        "seconds": round(seconds, 1),
    }


def _log_mlflow(
    parent_id: str, exp_id: str, arms: list[Arm], report: dict[str, Any], paths: Paths
) -> None:
    import mlflow

    for arm in arms:
        with mlflow.start_run(experiment_id=exp_id, run_name=arm.name, nested=True):
            mlflow.log_params(
                {
                    "arm": arm.name,
                    "real": arm.real,
                    "classical": arm.classical,
                    "synthetic_ratio": arm.ratio,
                    "describe": arm.describe(),
                }
            )
            for k, row in report["summary"].items():
                e = row[arm.name]
                mlflow.log_metrics(
                    {
                        f"accuracy_{k}": e["accuracy"],
                        f"accuracy_{k}_low": e["low"],
                        f"accuracy_{k}_high": e["high"],
                    }
                )
                if "diff" in e:
                    mlflow.log_metrics(
                        {
                            f"diff_{k}": e["diff"],
                            f"diff_{k}_low": e["diff_low"],
                            f"diff_{k}_high": e["diff_high"],
                        }
                    )
                for seed, acc in enumerate(e["seeds"]):
                    mlflow.log_metric(f"accuracy_{k}_by_seed", acc, step=seed)
    for fname in (
        "metrics.json",
        "accuracy.csv",
        "table.md",
        "conclusion.md",
        "results.json",
        "accuracy.png",
    ):
        mlflow.log_artifact(str(paths.out / fname), "augment")
    for k, g in report["generators"].items():
        mlflow.log_metric(f"generator_fid_{k}", g["fid"])
    mlflow.log_metric("seconds", report["seconds"])
