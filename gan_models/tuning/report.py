"""What a study leaves behind: params/best.yaml, and its MLflow run with plots and a summary."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gan_models.training.params import TrainParams
from gan_models.tuning.inputs import Tuning, trial_params
from gan_models.tuning.optuna_import import import_optuna
from gan_models.tuning.storage import ATTR_PARENT_RUN, ATTR_TRACKING_URI, display_url
from gan_models.tuning.summary import StudyReport, report_dict
from gan_models.utils.io import write_text_atomic


def write_best(out: str | Path, tuning: Tuning, report: StudyReport) -> None:
    """params/best.yaml: the base params file (``extends``) plus the best trial's values."""
    assert report.best is not None
    best = report.best
    values = best["params"]
    params = trial_params(tuning, values, tuning.base.name or "train")
    data = params.to_dict()
    top: dict[str, Any] = {}
    for key in values:
        parts = key.split(".")
        node: Any = data
        path: list[str] = []
        for p in parts:  # up to the first list: lists are written whole
            if isinstance(node, list):
                break
            path.append(p)
            node = node[p]
        cursor = top
        src = data
        for p in path[:-1]:
            cursor = cursor.setdefault(p, {})
            src = src[p]
        cursor[path[-1]] = src[path[-1]]
    tuned = {
        "study": tuning.study_name,
        "trial": best["number"],
        "storage": display_url(tuning.storage_url),
        "values": best["values"],
        "mlflow_run_id": _trial_run_id(best.get("run_dir")),
        "mlflow_parent_run_id": report.parent_run_id,
    }
    header = (
        f"# The best trial of study {tuning.study_name!r} (trial {best['number']}, "
        + ", ".join(f"{k} {v:.4g}" for k, v in (best["values"] or {}).items())
        + f"), on top of {tuning.base_path}.\n# Written by `ganops tune`; edits are overwritten.\n"
    )
    write_params_file(out, tuning.base_path, tuning.base.name, tuned, top, header)


def write_params_file(
    out: str | Path,
    base_path: str | Path,
    name: str | None,
    tuned: dict[str, Any] | None,
    sections: dict[str, Any],
    header: str,
) -> None:
    import yaml

    out = Path(out)
    rel = os.path.relpath(Path(base_path).resolve(), out.resolve().parent)
    doc: dict[str, Any] = {"extends": rel, "name": name or Path(base_path).stem, "tuned": tuned}
    doc.update(sections)
    write_text_atomic(out, header + yaml.safe_dump(doc, sort_keys=False))


def write_untuned(out: str | Path, base_path: str | Path, base: TrainParams) -> None:
    """params/best.yaml when tuning is off: the base params, unchanged."""
    header = (
        f"# Tuning is off (tune.enabled in params/tune.yaml): the training params are "
        f"{base_path} unchanged.\n# Written by `ganops tune`; edits are overwritten.\n"
    )
    write_params_file(out, base_path, base.name, None, {}, header)


def _trial_run_id(run_dir: str | None) -> str | None:
    if not run_dir:
        return None
    from gan_models.tracking.run_ref import read_run_ref

    ref = read_run_ref(run_dir)
    return ref.run_id if ref else None


def parent_run(tuning: Tuning, study) -> str:
    """The study's MLflow run (created once, found again when the study is continued)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from gan_models.tracking.lineage import (
        TAG_OPTUNA_STORAGE,
        TAG_OPTUNA_STUDY,
        git_state,
    )
    from gan_models.tracking.store import (
        DEFAULT_EXPERIMENT,
        check_reachable,
        ensure_experiment,
        resolve_tracking_uri,
    )

    uri = resolve_tracking_uri(tuning.tracking_uri)
    check_reachable(uri)
    client = MlflowClient(uri)
    have = study.user_attrs.get(ATTR_PARENT_RUN)
    if have and study.user_attrs.get(ATTR_TRACKING_URI) == uri:
        try:
            client.get_run(have)
            client.update_run(have, status="RUNNING")
            return have
        except MlflowException:
            pass  # the run is gone (another store): start a new one
    experiment_id = ensure_experiment(DEFAULT_EXPERIMENT, uri, tuning.root)
    commit, dirty = git_state(tuning.root)
    tags = {
        TAG_OPTUNA_STUDY: tuning.study_name,
        TAG_OPTUNA_STORAGE: display_url(tuning.storage_url),
        "ganops.kind": "study",
        "ganops.git_commit": commit,
        "ganops.git_dirty": dirty,
        "ganops.base_params": str(tuning.base_path),
    }
    run = client.create_run(experiment_id, run_name=f"tune-{tuning.study_name}", tags=tags)
    run_id = run.info.run_id
    t = tuning.tune
    client.log_param(run_id, "objectives", json.dumps(t.objectives))
    client.log_param(run_id, "trials", t.trials)
    client.log_param(run_id, "sampler", t.sampler.model_dump_json())
    client.log_param(run_id, "pruner", t.pruner.model_dump_json() if t.prunes else "none")
    client.log_param(run_id, "budget", json.dumps(t.budget)[:6000])
    client.log_dict(
        run_id, {k: v.model_dump(mode="json") for k, v in t.space.items()}, "study/space.json"
    )
    study.set_user_attr(ATTR_PARENT_RUN, run_id)
    study.set_user_attr(ATTR_TRACKING_URI, uri)
    return run_id


def study_figures(tuning: Tuning, study) -> dict[str, Any]:
    """Matplotlib figures of the study: history, importances, intermediate FIDs, Pareto front."""
    import_optuna()
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots: dict[str, Callable[[], Any]] = {}
    if tuning.tune.multi_objective:
        names = list(tuning.tune.objectives)
        plots["pareto_front.png"] = lambda: vis.plot_pareto_front(study, target_names=names)
    else:
        plots["history.png"] = lambda: vis.plot_optimization_history(study, target_name="FID")
        plots["intermediate_fid.png"] = lambda: vis.plot_intermediate_values(study)
    if len(done) >= 2:
        plots["param_importances.png"] = lambda: vis.plot_param_importances(
            study, target=(lambda t: t.values[0]), target_name="FID"
        )
    figures = {}
    for name, plot in plots.items():
        try:
            ax = plot()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances of a space that did not vary
        fig = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
        fig.set_size_inches(8, 5)
        figures[name] = fig
    return figures


def log_study(tuning: Tuning, study, parent: str, report: StudyReport) -> None:
    import matplotlib

    matplotlib.use("Agg")  # optuna's matplotlib plots use pyplot
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    client = MlflowClient(study.user_attrs[ATTR_TRACKING_URI])
    for name, fig in study_figures(tuning, study).items():
        client.log_figure(parent, fig, f"study/{name}")
        plt.close(fig)
    client.log_dict(parent, report_dict(report), "study/summary.json")
    counts = report.counts()
    metrics = {
        "trials_complete": counts.get("COMPLETE", 0),
        "trials_pruned": counts.get("PRUNED", 0),
        "trials_failed": counts.get("FAIL", 0),
        "steps_trained": report.steps_trained,
        "trial_seconds": report.seconds,
    }
    if report.best and report.best["values"]:
        for k, v in report.best["values"].items():
            metrics[f"best_{k}"] = v
        client.set_tag(parent, "optuna.best_trial", str(report.best["number"]))
        for k, v in report.best["params"].items():
            client.set_tag(parent, f"best.{k}", json.dumps(v))
    for k, v in metrics.items():
        client.log_metric(parent, k, float(v))
    client.set_terminated(parent, "FINISHED")
