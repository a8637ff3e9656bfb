"""``promote``: move a registered model's ``champion`` alias when the gate says so.

The challenger (or a given version) becomes the champion only when
:func:`gan_models.tracking.gate.gate` finds it better; ``force`` overrides a refusal. Every
decision is written onto the version (``promotion.decision``, ``promotion.reason``,
``promotion.compared_to``, ``promotion.time``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from gan_models.errors import GanopsError
from gan_models.tracking.gate import (
    CHALLENGER,
    CHAMPION,
    GateMetrics,
    RegisterParams,
    gate,
    load_register_params,
)
from gan_models.tracking.store import check_reachable, resolve_tracking_uri


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
