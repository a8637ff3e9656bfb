"""What a run reports at its end: a markdown summary and a table of a study's trials.

The summary lists the stages (ran, skipped, restored), the run's metrics with their CIs, the
promotion gate's decision and links to the MLflow run and model version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect.artifacts import create_table_artifact


def read_registration(path: Path) -> dict[str, Any] | None:
    """What ``ganops register --record`` wrote: model, version, run_id (decision, reason)."""
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def decision_text(registration: dict[str, Any] | None) -> str | None:
    """One line on the promotion gate's decision, if it ran."""
    if not registration or not registration.get("decision"):
        return None
    champion = ""
    if "champion" in registration:
        c = registration["champion"]
        champion = f" (champion now: version {c})" if c else " (no champion)"
    return (
        f"{registration['model']} version {registration['version']}: "
        f"**{registration['decision']}**: {registration.get('reason', '')}{champion}"
    )


def _mlflow_links(run_dir: Path, registration: dict[str, Any] | None) -> list[str]:
    ref_path = run_dir / "mlflow_run.json"
    if not ref_path.is_file():
        return []
    ref = json.loads(ref_path.read_text())
    uri, run_id, exp = ref.get("tracking_uri", ""), ref.get("run_id"), ref.get("experiment_id")
    lines = []
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        lines.append(f"- MLflow run: [{run_id}]({base}/#/experiments/{exp}/runs/{run_id})")
        if registration:
            name, version = registration["model"], registration["version"]
            lines.append(
                f"- Model version: [{name} v{version}]({base}/#/models/{name}/versions/{version})"
            )
    else:
        lines.append(f"- MLflow run: `{run_id}` (experiment {exp}) in `{uri}`")
        if registration:
            lines.append(
                f"- Model version: `models:/{registration['model']}/{registration['version']}`"
            )
    return lines


def summary_markdown(
    run_dir: Path,
    stages: list[dict[str, Any]],
    *,
    title: str,
    registration: dict[str, Any] | None = None,
) -> str:
    """The run's summary: stages, metrics with their CIs, promotion decision, MLflow links."""
    out = [f"# {title}", "", "| stage | status | seconds |", "|---|---|---|"]
    out += [f"| {s['stage']} | {s['status']} | {s['seconds']:.1f} |" for s in stages]
    metrics_path = run_dir / "metrics.json"
    out += ["", "## Metrics", ""]
    if metrics_path.is_file():
        from gan_models.metrics.report import metrics_markdown

        metrics = json.loads(metrics_path.read_text())
        out += metrics_markdown(metrics).splitlines()
        ex = (metrics.get("lineage") or {}).get("extractor") or {}
        out += ["", f"From `{metrics_path}` (features: {ex.get('name', 'n/a')})."]
    else:
        out.append(f"No `{metrics_path}`: the run was not evaluated.")
    decision = decision_text(registration)
    if decision:
        out += ["", "## Promotion", "", decision]
    links = _mlflow_links(run_dir, registration)
    if links:
        out += ["", "## MLflow", "", *links]
    return "\n".join(out) + "\n"


def publish_trials(summary_path: Path, key: str = "tune-trials") -> list[dict[str, Any]]:
    """A table artifact of a study's trials (from its runs/tune/STUDY/summary.json)."""
    if not summary_path.is_file():
        return []
    summary = json.loads(summary_path.read_text())
    best = (summary.get("best") or {}).get("number")
    rows = []
    for t in summary.get("trials") or []:
        rows.append(
            {
                "trial": t["number"],
                "state": t["state"] + (" (best)" if t["number"] == best else ""),
                "fid": None if t.get("fid") is None else round(t["fid"], 2),
                "steps": t.get("steps_trained"),
                "pruned at": t.get("pruned_at"),
                "retry of": t.get("retry_of"),
                "params": json.dumps(t.get("params") or {}),
            }
        )
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(summary.get("counts", {}).items()))
    create_table_artifact(rows, key=key, description=f"study {summary['study']}: {counts}")
    return rows
