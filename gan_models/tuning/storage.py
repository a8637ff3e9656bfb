"""A study in its Optuna RDB storage: open it, find a trial, fail and re-enqueue a trial.

The storage is all the controller and its workers share. It keeps each trial's heartbeat and
retries a stale trial with Optuna's RetryHeartbeatStaleTrialCallback; the retry trains in the
first attempt's run folder and so resumes from its last checkpoint. sqlite writers wait for
each other (a connect timeout); a storage shared across hosts is a PostgreSQL URL.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gan_models.errors import ConfigError, GanopsError
from gan_models.tuning.inputs import signature
from gan_models.tuning.optuna_import import import_optuna
from gan_models.tuning.samplers import make_pruner, make_sampler

if TYPE_CHECKING:
    from gan_models.tuning.inputs import Tuning

# Study user attrs: what the study was created for, and its MLflow run.
ATTR_SIGNATURE = "ganops.signature"
ATTR_PARENT_RUN = "mlflow_run_id"
ATTR_TRACKING_URI = "mlflow_tracking_uri"
# How long a storage that stopped answering (a PostgreSQL restart, a network blip) is waited for
# before the controller or a trial gives up.
STORAGE_OUTAGE_S = 300.0


def make_storage(tuning: Tuning):
    """The RDB storage with heartbeats and retry of stale trials (resuming their checkpoints)."""
    optuna = import_optuna()
    url = tuning.storage_url
    # a pooled connection that a database restart closed is replaced instead of failing a call
    kwargs: dict[str, Any] = {"engine_kwargs": {"pool_pre_ping": True}}
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"]["connect_args"] = {"timeout": 60}  # parallel writers wait
    hb = tuning.tune.heartbeat
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(
        max_retry=hb.max_retry, inherit_intermediate_values=True
    )
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=hb.interval,
            grace_period=hb.grace_period,
            heartbeat_stale_trial_callback=retry,
            **kwargs,
        )
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's many errors: one clear line
        raise ConfigError(f"tune.storage: cannot open {url} ({type(e).__name__}: {e})") from None


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a storage call raises while the database does not answer."""
    optuna = import_optuna()
    import sqlalchemy.exc

    return (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.InterfaceError)  # fmt: skip


def with_storage_retry(
    call: Callable[[], Any],
    outage_s: float = STORAGE_OUTAGE_S,
    on_wait: Callable[[BaseException], None] | None = None,
) -> Any:
    """``call()``, retried every 2 s while the storage does not answer, for up to ``outage_s``."""
    errors = storage_errors()
    deadline = time.monotonic() + outage_s
    waited = False
    while True:
        try:
            return call()
        except errors as e:
            if time.monotonic() > deadline:
                raise GanopsError(f"tune.storage: no answer for {outage_s:.0f} s ({e})") from None
            if not waited and on_wait is not None:
                on_wait(e)
            waited = True
            time.sleep(2)


def display_url(url: str) -> str:
    """A storage URL without its password (it goes into tags and files)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    return url


def open_study(tuning: Tuning, storage=None, *, sampler=None):
    """Create the study or load it (same name = same study); refuse other inputs under it."""
    optuna = import_optuna()
    storage = storage or make_storage(tuning)
    directions = ["minimize"] * len(tuning.tune.objectives)
    try:
        study = optuna.create_study(
            study_name=tuning.study_name,
            storage=storage,
            sampler=sampler or make_sampler(tuning),
            pruner=make_pruner(tuning),
            directions=directions,
            load_if_exists=True,
        )
    except ValueError as e:  # e.g. a study of that name with other directions
        raise ConfigError(f"tune.study {tuning.study_name!r}: {e}") from None
    sig = signature(tuning.tune, tuning.base)
    have = study.user_attrs.get(ATTR_SIGNATURE)
    if have is None:
        study.set_user_attr(ATTR_SIGNATURE, sig)
        study.set_user_attr("objectives", list(tuning.tune.objectives))
        study.set_user_attr("base_params", str(tuning.base_path))
    elif have != sig:
        raise ConfigError(
            f"tune.study {tuning.study_name!r} in {tuning.storage_url} was run with other training "
            "params, budget, search space or objectives; give the study another name (tune.study "
            "or --study), or leave tune.study empty for a name derived from the inputs"
        )
    if len(study.directions) != len(directions):
        raise ConfigError(
            f"tune.study {tuning.study_name!r} has {len(study.directions)} objective(s), not "
            f"{len(directions)}; give the study another name"
        )
    return study


def find_trial(study, number: int):
    """The frozen trial ``number`` of ``study`` (GanopsError if it has none)."""
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return t
    raise GanopsError(f"study {study.study_name!r} has no trial {number}")


def root_trial_number(frozen) -> int:
    """The first attempt of a retried trial (its run folder is shared by the retries)."""
    optuna = import_optuna()
    history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
    return history[0] if history else frozen.number


def fail_and_retry(study, number: int) -> bool:
    """Fail trial ``number`` if it is still running and enqueue its retry, as Optuna does for a
    stale heartbeat (same params, retry history, intermediate values; ``max_retry`` bounds it).

    For a trial that no live worker holds: its process ended without telling the storage.
    Returns whether this call failed it (another process may have finished it first).
    """
    optuna = import_optuna()
    from optuna.trial import TrialState

    trial = find_trial(study, number)
    if trial.state != TrialState.RUNNING:
        return False
    storage = study._storage  # what optuna.storages.fail_stale_trials uses too
    try:
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:  # told or failed meanwhile elsewhere
        return False
    retry = storage.get_heartbeat_stale_trial_callback()
    if retry is not None:
        retry(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
    return True
