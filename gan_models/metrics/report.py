"""One renderer of evaluation results, driven by the metric registry.

Every place that shows metrics renders them from here: the ``ganops evaluate`` / ``ganops summary``
table (:func:`format_metrics_table`), the model card and the Prefect run summary
(:func:`metrics_markdown`, from the same :func:`metric_rows`), and the flat ``summary`` of numbers
that MLflow and DVC metrics read (:func:`summary_numbers`). Each registered
metric gives its own rows and numbers (:class:`~gan_models.metrics.registry.Metric`), so a new
metric shows up everywhere without touching this module. Absent metrics (a partial result, a
metric that did not apply) are left out.
"""

from __future__ import annotations

from typing import Any

from gan_models.metrics.registry import Row, registered_metrics


def _entries(result: dict[str, Any]):
    for metric in registered_metrics():
        entry = result.get(metric.name)
        if isinstance(entry, dict):
            yield metric, entry


def metric_rows(result: dict[str, Any]) -> list[Row]:
    """(metric, value, notes) rows of an evaluation result, in registry order."""
    rows: list[Row] = []
    for metric, entry in _entries(result):
        if metric.rows is not None:
            rows += metric.rows(entry)
    return rows


def summary_numbers(result: dict[str, Any]) -> dict[str, float]:
    """Flat name -> number view of a result, for trackers that log scalars (its ``summary``)."""
    out: dict[str, float] = {}
    for metric, entry in _entries(result):
        if metric.summary is not None:
            out.update(metric.summary(entry))
    return out


def lineage_lines(result: dict[str, Any]) -> list[str]:
    """What the numbers were measured with: extractor, resize, reference split, counts, seed."""
    lin = result.get("lineage") or {}
    ex = lin.get("extractor") or {}
    if not ex:
        return []
    return [
        f"extractor: {ex.get('name')} sha256 {str(ex.get('sha256'))[:12]}, "
        f"features {ex.get('feature_dim')}-d",
        f"resize: {ex.get('resize')}",
        f"reference: {lin.get('reference_split')} (n={lin.get('n_real_train')}), "
        f"n_fake={lin.get('n_fake')}, seed={lin.get('seed')}",
    ]


def format_metrics_table(result: dict[str, Any]) -> str:
    """A plain-text table of an evaluation result, with its lineage underneath."""
    rows = metric_rows(result)
    if not rows:
        return "no metrics"
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    lines = [f"{'metric':<{w0}}  {'value':<{w1}}  notes", "-" * (w0 + w1 + 40)]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    lineage = lineage_lines(result)
    return "\n".join(lines + ([""] + lineage if lineage else []))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def metrics_markdown(result: dict[str, Any]) -> str:
    """A markdown table (metric | value | notes) of an evaluation result ("" when it has none)."""
    rows = metric_rows(result)
    if not rows:
        return ""
    lines = ["| metric | value | notes |", "|---|---|---|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
