"""How Python values go into MLflow: numbers as metric values, the rest as param and tag text."""

from __future__ import annotations

import json
import numbers
from typing import Any

MAX_TAG = 5000  # MLflow's limit on a tag value's length


def is_number(v: Any) -> bool:
    """A real number that can be a metric value (numpy scalars included, bools not)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def param_value(v: Any) -> str:
    """A param or tag value as text: containers and None as JSON, anything else as ``str``."""
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) or v is None else str(v)
