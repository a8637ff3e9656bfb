"""The model registry: registering evaluated runs and the champion/challenger promotion gate.

A registered model is named ``<family>-<dataset>`` (``dcgan-mnist5k``). ``register_run`` adds a
version from a run folder, copies its metrics and lineage onto the version as tags and points
the ``challenger`` alias at it. ``promote`` moves ``champion`` to the challenger only when it is
better: a lower FID whose 95% bootstrap interval does not overlap the champion's (or a FID lower
by at least ``fid_margin`` when that is set), and precision and recall no worse than the
champion's by more than ``pr_tolerance``. Every decision is written onto the version
(``promotion.decision``, ``promotion.reason``, ``promotion.compared_to``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from gan_models.config import Section, TrainParams, load_params, load_section
from gan_models.errors import ConfigError, GanopsError
from gan_models.tracking import lineage as L
from gan_models.tracking.card import model_card
from gan_models.tracking.mlflow_tracking import (
    EVAL_PREFIX,
    attach_run,
    check_reachable,
    final_step,
    log_evaluation,
    run_ref_extra,
    update_run_ref,
    using_tracking_uri,
)
from gan_models.tracking.model import MODEL_NAME_IN_RUN, check_run_folder, log_generator_model
from gan_models.utils.io import sha256_file

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"
# Where an evaluation of a run folder is looked for, in order, when no path is given.
METRICS_CANDIDATES = ("metrics.json", "eval/metrics.json", "evaluation/metrics.json")
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


# ----------------------------------------------------------------------------- the gate


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


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of :func:`promote`, as also recorded on the version's tags."""

    model_name: str
    version: str
    decision: str  # promoted, forced, rejected or unchanged
    reason: str
    compared_to: str | None  # the champion's version, if there was one
    champion: str | None  # the champion's version after the decision

    @property
    def promoted(self) -> bool:
        return self.decision in ("promoted", "forced")

    def __str__(self) -> str:
        against = f" against version {self.compared_to}" if self.compared_to else ""
        return f"{self.model_name} version {self.version}: {self.decision}{against}: {self.reason}"


# ----------------------------------------------------------------------------- registering


def model_name_for(params: TrainParams, dataset: str) -> str:
    """``<family>-<dataset>``, e.g. ``dcgan-mnist5k``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{params.model.family}-{dataset}").strip("-")


def find_metrics(run_dir: Path, metrics_path: str | Path | None = None) -> Path:
    if metrics_path is not None:
        if not Path(metrics_path).is_file():
            raise GanopsError(f"{metrics_path}: metrics file not found")
        return Path(metrics_path)
    for rel in METRICS_CANDIDATES:
        if (run_dir / rel).is_file():
            return run_dir / rel
    raise GanopsError(
        f"{run_dir}: no evaluation found (looked for {', '.join(METRICS_CANDIDATES)}); "
        "evaluate the run first or pass the metrics.json path"
    )


def read_metrics(path: Path) -> dict[str, Any]:
    """An evaluation's metrics.json, checked for what registration and the gate need."""
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise GanopsError(f"{path}: not valid JSON ({e})") from None
    need = {
        "fid.value": ("fid", "value"),
        "fid.ci95.low": ("fid", "ci95", "low"),
        "fid.ci95.high": ("fid", "ci95", "high"),
        "precision_recall.precision": ("precision_recall", "precision"),
        "precision_recall.recall": ("precision_recall", "recall"),
    }
    for dotted, keys in need.items():
        node: Any = metrics
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, (int, float)) or isinstance(node, bool):
            raise GanopsError(f"{path}: {dotted} must be a number, got {node!r}")
    return metrics


def version_tags(metrics: dict[str, Any], run_tags: dict[str, str], run_id: str) -> dict[str, str]:
    """The metrics and lineage a version carries: what the gate reads and what traces it back."""
    fid, pr = metrics["fid"], metrics["precision_recall"]
    tags = {
        "fid": fid["value"],
        "fid_ci_low": fid["ci95"]["low"],
        "fid_ci_high": fid["ci95"]["high"],
        "precision": pr["precision"],
        "recall": pr["recall"],
        "fid_floor": (fid.get("floor") or {}).get("value"),
        "run_id": run_id,
    }
    lin = metrics.get("lineage") or {}
    ex = lin.get("extractor") or {}
    tags.update(
        {
            "metrics.extractor": ex.get("name"),
            "metrics.extractor_sha256": ex.get("sha256"),
            "metrics.n_fake": lin.get("n_fake"),
            "metrics.reference_split": lin.get("reference_split"),
            "metrics.seed": lin.get("seed"),
        }
    )
    for k in L.LINEAGE_TAGS:
        if k in run_tags:
            tags[k] = run_tags[k]
    return {k: str(v) for k, v in tags.items() if v is not None}


def _logged_model(client, run_dir: Path, run_id: str, fingerprint: str) -> str | None:
    """The model URI already logged for this run folder with these weights and metrics."""
    known = run_ref_extra(run_dir, "model") or {}
    if known.get("fingerprint") != fingerprint or not known.get("model_id"):
        return None
    try:
        logged = client.get_logged_model(known["model_id"])
    except Exception:  # noqa: BLE001 - deleted or from another server: log it again
        return None
    return known["model_uri"] if logged.source_run_id == run_id else None


def register_run(
    run_dir: str | Path,
    *,
    model_name: str | None = None,
    metrics_path: str | Path | None = None,
    tracking_uri: str | None = None,
) -> ModelVersion:
    """Register a version of a trained, evaluated run folder; alias it ``challenger``.

    Logs the generator to the run's MLflow run unless it is there with the same weights and
    metrics (a tracked run is attached through RUN_DIR/mlflow_run.json; an untracked one gets a
    run now), registers a version of ``model_name`` (default ``<family>-<dataset>``), copies the
    metrics (FID with its CI, precision, recall, floor) and lineage onto it as tags, uses the
    model card as its description and points ``challenger`` at it. Returns the ModelVersion.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    if model_name is not None and (not model_name.strip() or set("/:") & set(model_name)):
        raise ConfigError(
            f"--name: {model_name!r} is not a registered model name (not empty, no '/' or ':')"
        )
    run_dir = check_run_folder(run_dir)
    mpath = find_metrics(run_dir, metrics_path)
    metrics = read_metrics(mpath)
    params = load_params(run_dir / "config.yaml", TrainParams)
    ref = attach_run(run_dir, tracking_uri=tracking_uri)
    client = MlflowClient(ref.tracking_uri)
    run = client.get_run(ref.run_id)
    if f"{EVAL_PREFIX}fid" not in run.data.metrics:
        log_evaluation(run_dir, metrics, tracking_uri=ref.tracking_uri)
    run_tags = dict(run.data.tags)
    dataset = run_tags.get(L.TAG_DATASET) or Path(params.data.path).name
    name = model_name or model_name_for(params, dataset)
    steps = final_step(run_dir) or None
    card = model_card(name, params, metrics, run_tags, run_id=ref.run_id, steps=steps)
    fingerprint = f"{sha256_file(run_dir / 'generator.safetensors')}:{sha256_file(mpath)}:{name}"
    tags = version_tags(metrics, run_tags, ref.run_id)

    with using_tracking_uri(ref.tracking_uri):
        model_uri = _logged_model(client, run_dir, ref.run_id, fingerprint)
        if model_uri is None:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == ref.run_id:
                run_ctx = contextlib.nullcontext()  # the caller has this very run open
            else:
                run_ctx = mlflow.start_run(run_id=ref.run_id, nested=active is not None)
            with run_ctx:
                info = log_generator_model(run_dir, card=card, name=MODEL_NAME_IN_RUN)
                mlflow.log_text(card, "model_card.md")
            model_uri = info.model_uri
            update_run_ref(
                run_dir,
                model={
                    "model_id": info.model_id,
                    "model_uri": model_uri,
                    "fingerprint": fingerprint,
                },
            )
        mv = mlflow.register_model(model_uri, name, tags=tags)
    client.update_model_version(name, mv.version, description=card)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return client.get_model_version(name, mv.version)


# ----------------------------------------------------------------------------- promoting


def _alias_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        return None


def promote(
    model_name: str,
    *,
    version: int | str | None = None,
    force: bool = False,
    params: RegisterParams | str | Path | None = None,
    tracking_uri: str | None = None,
) -> PromotionDecision:
    """Make the challenger (or ``version``) the champion if the gate says it is better.

    ``force`` promotes regardless and records it as forced, with what the gate said. The
    decision, its reason and the champion it was compared to are written onto the version.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from gan_models.tracking.mlflow_tracking import resolve_tracking_uri

    if not isinstance(params, RegisterParams):
        params = load_register_params(params)
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    client = MlflowClient(uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        raise GanopsError(f"{model_name}: no such registered model") from None
    if version is None:
        version = _alias_version(client, model_name, CHALLENGER)
        if version is None:
            raise GanopsError(
                f"{model_name}: no version has the {CHALLENGER!r} alias; pass --version"
            )
    version = str(version)
    try:
        candidate = client.get_model_version(model_name, version)
    except MlflowException:
        raise GanopsError(f"{model_name}: version {version} does not exist") from None
    champ_version = _alias_version(client, model_name, CHAMPION)
    if champ_version == version:
        return PromotionDecision(
            model_name, version, "unchanged", "already the champion", None, champ_version
        )

    champion = None
    try:
        cand = GateMetrics.from_tags(candidate.tags, f"{model_name} version {version}")
        if champ_version is not None:
            champ_mv = client.get_model_version(model_name, champ_version)
            champion = GateMetrics.from_tags(champ_mv.tags, f"champion version {champ_version}")
        ok, reason = gate(cand, champion, params)
    except GanopsError as e:
        if not force:
            raise
        ok, reason = False, str(e)
    if force:
        decision = "forced"
        reason = f"forced; the gate {'agreed' if ok else 'refused'}: {reason}"
    else:
        decision = "promoted" if ok else "rejected"
    if decision != "rejected":
        client.set_registered_model_alias(model_name, CHAMPION, version)
    new_champion = version if decision != "rejected" else champ_version
    record = {
        "promotion.decision": decision,
        "promotion.reason": reason[:5000],
        "promotion.compared_to": f"{model_name}/{champ_version}" if champ_version else "none",
        "promotion.time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    for k, v in record.items():
        client.set_model_version_tag(model_name, version, k, v)
    return PromotionDecision(model_name, version, decision, reason, champ_version, new_champion)
