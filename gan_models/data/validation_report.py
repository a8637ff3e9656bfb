"""The validation report: what the suite found, as rules, observations and example rows.

Each failed Great Expectations result becomes a :class:`FailedRule` naming the rule, what was
expected and seen, and example rows (image indices, with file names where the dataset lists
them); a :class:`ValidationResult` sums them up for the command line and ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gan_models.data.image_stats import ROW_INDEX


@dataclass
class FailedRule:
    """One failed expectation: which rule, what was seen, and example rows (image indices)."""

    rule: str
    expectation: str
    column: str | None
    description: str
    observed: str
    rows: list[int] = field(default_factory=list)
    n_rows: int | None = None
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One summary line: rule, expectation, what was expected and seen, and example rows."""
        where = f"{self.expectation}" + (f" on {self.column!r}" if self.column else "")
        text = f"{self.rule} ({where}): expected {self.description}; {self.observed}"
        if self.rows:
            more = f" of {self.n_rows}" if self.n_rows and self.n_rows > len(self.rows) else ""
            text += f"; rows{more}: {', '.join(map(str, self.rows))}"
            if self.files:
                text += f" (files: {', '.join(self.files)})"
        return text


@dataclass
class ValidationResult:
    """What :func:`gan_models.data.gx_suite.validate_table` found; ``failures`` is empty when every rule held."""

    name: str
    success: bool
    n_images: int
    n_rules: int
    failures: list[FailedRule]
    report_dir: Path | None = None

    @property
    def docs_index(self) -> Path | None:
        """The data docs entry page, when a report directory was written."""
        return None if self.report_dir is None else self.report_dir / "index.html"

    def summary(self) -> str:
        """One line on success; on failure a header plus one line per failed rule."""
        docs = f" (data docs: {self.docs_index})" if self.docs_index else ""
        if self.success:
            return (
                f"validate {self.name}: OK, {self.n_images} images passed "
                f"{self.n_rules} expectations{docs}"
            )
        head = (
            f"validate {self.name}: FAILED {len(self.failures)} of {self.n_rules} expectations "
            f"on {self.n_images} images{docs}"
        )
        return "\n".join([head, *(f"  - {f.line()}" for f in self.failures)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "success": self.success,
            "n_images": self.n_images,
            "n_rules": self.n_rules,
            "failures": [asdict(f) for f in self.failures],
        }


def _short(values: Sequence[Any], n: int) -> str:
    shown = [v if not isinstance(v, float) else float(f"{v:.6g}") for v in list(values)[:n]]
    return repr(shown)


def _row_of(item: Any) -> int:
    # GX reports each unexpected row as its index value, or as a dict holding the named index.
    return int(item[ROW_INDEX] if isinstance(item, dict) else item)


def describe_failure(
    res: Any,
    table: pd.DataFrame,
    sp: dict[str, Any],
    max_examples: int,
    file_names: Sequence[str] | None,
) -> FailedRule:
    """Turn one failed GX expectation result into a rule, an observation and example rows."""
    cfg = res.expectation_config
    meta = cfg.meta or {}
    rule = meta.get("rule", cfg.type)
    column = cfg.kwargs.get("column")
    description = meta.get("description", cfg.type).format(**sp)
    r = res.result or {}
    n_ex = max_examples
    rows: list[int] = []
    n_rows: int | None = None
    if res.exception_info and res.exception_info.get("raised_exception"):
        observed = f"the check raised: {res.exception_info.get('exception_message')}"
    elif "unexpected_count" in r:
        rows = [_row_of(i) for i in r.get("partial_unexpected_index_list") or []][:n_ex]
        n_rows = int(r["unexpected_count"])
        observed = (
            f"{n_rows} image(s) break it, values e.g. {_short(r['partial_unexpected_list'], 5)}"
        )
        if rule == "class_balance":
            counts = table["label"].value_counts().sort_index()
            bad = counts[(counts / len(table) < sp["class_share_min"] - 1e-12)]
            bad = pd.concat([bad, counts[counts / len(table) > sp["class_share_max"] + 1e-12]])
            shares = ", ".join(f"class {c}: {n}/{len(table)}" for c, n in bad[:n_ex].items())
            more = f" and {len(bad) - n_ex} more" if len(bad) > n_ex else ""
            observed = f"{shares}{more} ({len(counts)} class(es) present)"
    elif rule == "duplicates":
        dup = table.index[table["sha1"].duplicated(keep="first")]
        rows = [int(i) for i in dup[:n_ex]]
        n_rows = len(dup)
        if len(table):
            frac = len(dup) / len(table)
            observed = f"{len(dup)} image(s) repeat an earlier one (fraction {frac:.4g})"
            if len(dup):
                first = table.index[table["sha1"] == table.at[dup[0], "sha1"]][0]
                observed += f", e.g. row {dup[0]} repeats row {first}"
        else:
            observed = "no images to compare"
    elif "partial_missing_list" in r:
        observed = f"missing classes {_short(r['partial_missing_list'], 20)}"
    else:
        observed = f"observed {r.get('observed_value')!r}"
        if rule == "min_count":
            observed = f"found {r.get('observed_value')} image(s)"
    files = [str(file_names[i]) for i in rows if i < len(file_names)] if file_names else []
    return FailedRule(
        rule=rule,
        expectation=cfg.type,
        column=column,
        description=description,
        observed=observed,
        rows=rows,
        n_rows=n_rows,
        files=files,
    )
