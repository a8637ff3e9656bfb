"""Register an evaluated run and run the champion/challenger gate, outside the pipeline.

``ganops register RUN_DIR`` adds a version of ``<family>-<dataset>`` aliased ``challenger``;
``ganops promote NAME`` moves ``champion`` to it only if the gate (params/register.yaml) says
it is better (``force`` promotes anyway, recorded as forced). The pipeline does the same in its
``register`` stage; this flow serves run folders the pipeline did not make (tuning trials).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from prefect import flow

from flows.params import PromoteParams
from flows.summary import read_registration
from flows.tasks import publish_summary, run_ganops
from gan_models.errors import ConfigError
from gan_models.services import STATE_DIR

# str(PromotionDecision): "NAME version V: DECISION[ against version C]: REASON"
DECISION_RE = re.compile(
    r"^(?P<model>\S+) version (?P<version>\S+): (?P<decision>\w+)(?: against version (?P<against>\S+))?: (?P<reason>.*)$"
)


@flow(name="promote", log_prints=True)
def promote(params: PromoteParams = PromoteParams()) -> dict[str, Any]:
    """Register ``run_dir`` (if given), then gate ``model`` (default: the registered name)."""
    project = Path(params.project_dir).resolve()
    stages: list[dict[str, Any]] = []
    registration: dict[str, Any] = {}
    name = params.model
    if params.run_dir:
        record = project / STATE_DIR / "records" / f"{uuid.uuid4().hex}.json"
        args = ["register", params.run_dir, "--record", str(record)]
        out = run_ganops(str(project), args, "register")
        stages.append({"stage": "register", "status": "ran", "seconds": out["seconds"]})
        registration = read_registration(record) or {}
        record.unlink(missing_ok=True)
        name = name or registration.get("model")
    if not name:
        raise ConfigError("model: give the registered model name, or a run_dir to register")
    args = ["promote", name, *(["--force"] if params.force else [])]
    out = run_ganops(str(project), args, "promote")
    stages.append({"stage": "promote", "status": "ran", "seconds": out["seconds"]})
    lines = out["output"].strip().splitlines()
    m = DECISION_RE.match(lines[-1]) if lines else None
    if m:
        registration.update(
            model=m["model"], version=m["version"], decision=m["decision"], reason=m["reason"]
        )
    publish_summary(
        str(project),
        params.run_dir or ".",
        stages,
        f"Promotion: {name}",
        registration or None,
        key="promotion",
    )
    return {"model": name, "registration": registration}
