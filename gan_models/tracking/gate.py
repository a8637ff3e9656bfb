"""The champion/challenger promotion gate: its params and its decision, without registry access.

A challenger is better than the champion when its FID is lower and its 95% bootstrap interval
does not overlap the champion's (or its FID is lower by at least ``fid_margin`` when that is
set), and its precision and recall are no worse than the champion's by more than
``pr_tolerance``. Metrics measured with another extractor, sample count or reference split are
not comparable. The metrics are read from the tags a registered version carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from gan_models.config import Section, load_section
from gan_models.errors import GanopsError

# The aliases of a registered model: the version in service and the latest candidate.
CHAMPION = "champion"
CHALLENGER = "challenger"
# The metrics the gate compares and the lineage that must match for them to be comparable.
GATE_TAGS = ("fid", "fid_ci_low", "fid_ci_high", "precision", "recall")
COMPARABILITY_TAGS = ("metrics.extractor_sha256", "metrics.n_fake", "metrics.reference_split")


class RegisterParams(Section):
    """The promotion gate (``register:`` in params/register.yaml)."""

    fid_margin: float | None = Field(
        None,
        ge=0,
        description="if set, the challenger must beat the champion's FID by at least this much "
        "(instead of non-overlapping 95% bootstrap intervals)",
    )
    pr_tolerance: float = Field(
        0.02,
        ge=0,
        le=1,
        description="how much lower precision and recall may be than the champion's",
    )


def load_register_params(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> RegisterParams:
    """``register:`` of a params file; defaults when ``path`` is None."""
    if path is None:
        return RegisterParams()
    return load_section(path, "register", RegisterParams, overrides)


@dataclass(frozen=True)
class GateMetrics:
    """What the gate compares, read from a version's tags."""

    fid: float
    ci_low: float
    ci_high: float
    precision: float
    recall: float
    lineage: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_tags(cls, tags: dict[str, str], what: str) -> GateMetrics:
        missing = [k for k in GATE_TAGS if k not in tags]
        if missing:
            raise GanopsError(
                f"{what} has no {', '.join(missing)} tag(s); register it from an evaluated run "
                "(metrics.json with fid, its ci95, precision and recall)"
            )
        try:
            values = [float(tags[k]) for k in GATE_TAGS]
        except ValueError as e:
            raise GanopsError(f"{what}: a metric tag is not a number ({e})") from None
        return cls(*values, {k: tags[k] for k in COMPARABILITY_TAGS if k in tags})

    def fid_text(self) -> str:
        return f"{self.fid:.4g} [{self.ci_low:.4g}, {self.ci_high:.4g}]"


def gate(
    candidate: GateMetrics, champion: GateMetrics | None, params: RegisterParams
) -> tuple[bool, str]:
    """(promote?, reason): is ``candidate`` better than ``champion``? Pure; no registry access."""
    if champion is None:
        return True, "first version: there is no champion to compare with"
    differ = [
        f"{k} {candidate.lineage[k]} vs {champion.lineage[k]}"
        for k in COMPARABILITY_TAGS
        if k in candidate.lineage and k in champion.lineage
        if candidate.lineage[k] != champion.lineage[k]
    ]
    if differ:
        return False, "metrics are not comparable: " + "; ".join(differ)
    failures, passes = [], []
    if params.fid_margin is not None:
        gain = champion.fid - candidate.fid
        text = (
            f"FID {candidate.fid:.4g} vs champion {champion.fid:.4g}: lower by {gain:.4g}, "
            f"margin {params.fid_margin:g}"
        )
        (passes if gain >= params.fid_margin else failures).append(text)
    elif candidate.fid >= champion.fid:
        failures.append(
            f"FID {candidate.fid_text()} is not lower than the champion's {champion.fid_text()}"
        )
    elif candidate.ci_high >= champion.ci_low:
        failures.append(
            f"FID {candidate.fid_text()} is lower than the champion's {champion.fid_text()} but "
            "the 95% intervals overlap: the difference may be noise"
        )
    else:
        passes.append(
            f"FID {candidate.fid_text()} beats the champion's {champion.fid_text()} "
            "(95% intervals do not overlap)"
        )
    for name in ("precision", "recall"):
        cand, champ = getattr(candidate, name), getattr(champion, name)
        if cand < champ - params.pr_tolerance:
            failures.append(
                f"{name} {cand:.4g} is below the champion's {champ:.4g} by more than "
                f"pr_tolerance {params.pr_tolerance:g}"
            )
        else:
            passes.append(f"{name} {cand:.4g} vs {champ:.4g} (tolerance {params.pr_tolerance:g})")
    if failures:
        return False, "; ".join(failures)
    return True, "; ".join(passes)
