"""Short HTTP retries and timeouts for the MLflow calls of one thread only.

MLflow reads ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (default 7, with exponential backoff: about four
minutes against a dead server), ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` and
``MLFLOW_HTTP_REQUEST_TIMEOUT`` (default 120 s) from the environment on every request, whatever
thread makes it. The outbox's sender must give up within seconds and retry on its own schedule,
and the user's settings must stay what they are for every other call. :func:`short_http` sets
them for the calling thread alone: ``mlflow.utils.rest_utils``'s variables are replaced, once, by
views that give the thread's values where it set them and the environment's everywhere else.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCAL = threading.local()
_INSTALLED = threading.Lock()
_NAMES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "max_retries",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "backoff_factor",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "timeout",
}


class _ThreadView:
    """An MLflow environment variable whose value a thread may override for itself."""

    def __init__(self, var: Any, field: str) -> None:
        self._var, self._field = var, field

    def get(self) -> Any:
        value = getattr(_LOCAL, self._field, None)
        return self._var.get() if value is None else value

    def __getattr__(self, name: str) -> Any:  # name, is_defined, unset, ...: the variable's
        return getattr(self._var, name)

    def __str__(self) -> str:
        return str(self._var)


def _install() -> None:
    from mlflow.utils import rest_utils

    with _INSTALLED:
        for name, field in _NAMES.items():
            var = getattr(rest_utils, name)
            if not isinstance(var, _ThreadView):
                setattr(rest_utils, name, _ThreadView(var, field))


def short_http(max_retries: int = 0, timeout: float = 5.0) -> None:
    """From now on, this thread's MLflow HTTP requests try ``1 + max_retries`` times and wait
    at most ``timeout`` s for a connection or an answer; other threads are unaffected."""
    _install()
    _LOCAL.max_retries = max_retries
    _LOCAL.backoff_factor = 1
    _LOCAL.timeout = timeout
