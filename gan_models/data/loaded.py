"""What a data source yields: named uint8 arrays, optional labels and class names, lineage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Loaded:
    """What a source yields: named uint8 arrays (N, C, H, W), optional labels and lineage."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    origin: dict[str, Any] = field(default_factory=dict)
