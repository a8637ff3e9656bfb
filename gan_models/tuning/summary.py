"""A study's outcome as data: :class:`StudyReport` (its trials, best trial, Pareto front, cost)
and the dict that ``summary.json`` and the study's MLflow run hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gan_models.tuning.inputs import trial_values
from gan_models.tuning.storage import display_url

if TYPE_CHECKING:
    from gan_models.tuning.inputs import Tuning


@dataclass
class StudyReport:
    """A study's trials as rows; ``best`` and ``pareto`` hold rows of the same shape."""

    study: str
    storage: str
    objectives: list[str]
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    pareto: list[dict[str, Any]]
    steps_trained: int
    seconds: float
    parent_run_id: str | None = None
    best_file: str | None = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t["state"]] = out.get(t["state"], 0) + 1
        return out


def _trial_row(tuning: Tuning, t) -> dict[str, Any]:
    a = t.user_attrs
    return {
        "number": t.number,
        "state": t.state.name,
        "values": dict(zip(tuning.tune.objectives, t.values, strict=True)) if t.values else None,
        "params": trial_values(tuning, t.params),
        "fid": a.get("fid"),
        "steps_trained": a.get("steps_trained", 0),
        "seconds": a.get("seconds", 0.0),
        "pruned_at": a.get("pruned_at"),
        "retry_of": a.get("retry_of"),
        "resumed_from": a.get("resumed_from"),
        "error": a.get("error"),
        "run_dir": a.get("run_dir"),
    }


def study_report(tuning: Tuning, study, parent_run_id: str | None = None) -> StudyReport:
    """The report of ``study`` as it stands in the storage."""
    from optuna.trial import TrialState

    rows = [_trial_row(tuning, t) for t in study.get_trials(deepcopy=False)]
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    pareto = [_trial_row(tuning, t) for t in study.best_trials] if done else []
    best = None
    if done:
        winner = (
            study.best_trial
            if not tuning.tune.multi_objective
            else min(study.best_trials, key=lambda t: t.values[0])
        )
        best = _trial_row(tuning, winner)
    return StudyReport(
        tuning.study_name,
        display_url(tuning.storage_url),
        list(tuning.tune.objectives),
        rows,
        best,
        pareto if tuning.tune.multi_objective else [],
        sum(int(r["steps_trained"] or 0) for r in rows),
        round(sum(float(r["seconds"] or 0) for r in rows), 3),
        parent_run_id,
    )


def report_dict(report: StudyReport) -> dict[str, Any]:
    """The report as JSON-ready data, with its counts by state."""
    from dataclasses import asdict

    return {**asdict(report), "counts": report.counts()}
