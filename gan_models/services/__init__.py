"""``ganops up`` / ``down`` / ``status``: the local services of a ganops checkout.

``up`` starts, on 127.0.0.1 with usage analytics off:

- a Prefect server (API and UI, default port 4200; its database in ``.ganops/prefect/``),
- the MLflow tracking server (default port 5000; ``mlflow.db`` and ``mlartifacts/`` in the
  project root, as the embedded default uses them),
- a process work pool (``--pool``, default ``gpu``) and the deployments of prefect.yaml on it
  (``prefect deploy --all`` of a copy of prefect.yaml whose deployments name that pool, since
  Prefect ignores ``--pool`` when it deploys several at once),
- a local worker on that pool (``--limit``: one flow run per GPU, one on a CPU host),

waits until each answers and records what it started in ``.ganops/services.json`` (PID, its
start time and command line, port, URL, log file). ``down`` stops exactly those processes,
after checking that each PID still belongs to the process that was started (PIDs are reused).
``up`` is idempotent: a recorded service that still runs is left alone. Logs go to
``.ganops/logs/``.

``up --team`` (or ``--services FILE``) starts the team services of ``params/services.yaml``
instead: PostgreSQL, an S3 endpoint, and the Prefect and MLflow servers on them, each behind
credentials that live in the environment or an owner-only secrets file (:mod:`.team`, with
``team_config`` the file's model, ``secrets``, ``postgres`` and ``s3``); ``ganops env`` prints
what clients export. See docs/team.md.

The modules, each importing only those before it: ``state`` (the record of started processes),
``processes`` (spawning the servers, checking that they answer), ``prefect_setup`` (work pool,
deployments, worker), ``stack`` (up/down/status) and ``cli`` (the commands). The public names
of the first four are importable from here; they load on first use (PEP 562), so that mounting
the commands (``gan_models.services.cli``) on every ``ganops`` command imports none of them.
"""

from importlib import import_module
from typing import Any

_NAMES = {
    "state": ("STATE_DIR", "STATE_FILE", "Service", "load_state", "save_state", "state_path"),
    "processes": (
        "HOST", "MLFLOW_PORT", "PREFECT_PORT", "QUIET_ENV", "base_env", "prefect_api",
        "start_mlflow", "start_prefect",
    ),
    "prefect_setup": (
        "POOL", "Deployment", "deploy", "ensure_work_pool", "read_deployments", "start_worker",
    ),
    "stack": ("ORDER", "ServiceStatus", "UpResult", "down", "exports", "status", "up"),
}  # fmt: skip
_WHERE = {name: module for module, names in _NAMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = sorted(_WHERE)
