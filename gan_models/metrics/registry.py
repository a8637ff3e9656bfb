"""The metric registry: one :class:`Metric` entry per metric, and what an evaluation hands it.

A metric says what it needs (:class:`Need`), how it computes its result from an
:class:`EvalContext` (a dict carrying its ``lineage``), which flat numbers it reports (the
``summary`` that MLflow and DVC metrics read) and which table rows it shows
(the CLI, the model card and the Prefect run summary all render those rows, see
:mod:`gan_models.metrics.report`). :func:`~gan_models.metrics.evaluate.evaluate_generator`
computes what the registered metrics need once and loops over the registry, so adding a metric
is one file::

    def mean_norm_ratio(ctx: EvalContext) -> dict:
        ...

    register_metric(Metric("mean_norm_ratio", mean_norm_ratio, needs={Need.FEATURES},
                           summary=..., rows=...))

Entries are kept in registration order, which is the order of metrics.json and of every table.
A metric whose ``compute`` is None is computed elsewhere: an image-to-image family's evaluation
plan supplies its result, and the registry still gives its summary and rows.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from gan_models.metrics.reference import ReferenceStats, reference_stats

if TYPE_CHECKING:
    import torch

    from gan_models.data.format import ImageSet
    from gan_models.metrics.extractor import FeatureExtractor

#: One table row of a metric: (name, value with its CI or spread, notes).
Row = tuple[str, str, str]
#: Top-level keys of an evaluation result that are not metrics.
RESERVED = frozenset({"lineage", "summary", "artifacts", "run"})


class Need(enum.Enum):
    """What a metric reads from the :class:`EvalContext` (each is computed once per evaluation).

    A metric that needs ``LABELS`` scores None when the generator returns no labels, and one
    that needs ``LOGITS`` scores None when the extractor has no classifier head.
    """

    IMAGES = "generated images (n, C, H, W) in [-1, 1]"
    LABELS = "labels of the generated images (n,)"
    FEATURES = "extractor features of the generated images (n, D)"
    LOGITS = "extractor logits of the generated images (n, K)"
    REFERENCE = "reference statistics of the real train split"
    TEST_REFERENCE = "reference statistics of the real test split"
    REAL_TRAIN = "the real train split"
    REAL_TEST = "the real test split"


ComputeFn = Callable[["EvalContext"], dict[str, Any] | None]


@dataclass(frozen=True)
class Metric:
    """One metric: its result key, what it needs, how it computes, reports and renders.

    - ``compute(ctx)`` returns the metric's result (a JSON-ready dict, with its ``lineage``:
      ``ctx.lineage(n_real, n_fake)``) or None when it does not apply; None as ``compute``: the
      result comes from an image-to-image family's evaluation plan.
    - ``summary(result)``: flat name -> number, merged into the evaluation's ``summary``.
    - ``rows(result)``: (name, value, notes) rows of the metrics table.
    - ``artifacts(result, ctx)``: arrays for the figures (kept out of metrics.json).
    - ``function``: the pure function over features the metric is built on, if any.
    """

    name: str
    compute: ComputeFn | None
    needs: frozenset[Need] = field(default_factory=frozenset)
    summary: Callable[[dict[str, Any]], dict[str, float]] | None = None
    rows: Callable[[dict[str, Any]], list[Row]] | None = None
    artifacts: Callable[[dict[str, Any], EvalContext], dict[str, Any]] | None = None
    function: Callable[..., Any] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        needs = frozenset(self.needs)
        if not all(isinstance(n, Need) for n in needs):
            raise TypeError(f"metric {self.name!r}: needs must be Need members, got {needs}")
        object.__setattr__(self, "needs", needs)
        if not self.name.isidentifier() or self.name in RESERVED:
            raise ValueError(
                f"metric name {self.name!r}: must be an identifier and none of {sorted(RESERVED)}"
            )


_REGISTRY: dict[str, Metric] = {}
#: The registered metrics by name, in registration order (read-only; see :func:`register_metric`).
METRICS = MappingProxyType(_REGISTRY)


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Add ``metric`` to the registry (after those already there) and return it.

    A second metric of the same name is refused unless ``replace`` (which keeps its position).
    """
    if not isinstance(metric, Metric):
        raise TypeError(f"register_metric takes a Metric, got {type(metric).__name__}")
    if metric.name in _REGISTRY and not replace:
        raise ValueError(f"a metric named {metric.name!r} is already registered")
    _REGISTRY[metric.name] = metric
    return metric


def unregister_metric(name: str) -> Metric:
    """Remove a registered metric and return it."""
    try:
        return _REGISTRY.pop(name)
    except KeyError:
        raise KeyError(f"no metric named {name!r} is registered") from None


def registered_metrics() -> tuple[Metric, ...]:
    """Every registered metric, in registration order."""
    return tuple(_REGISTRY.values())


def fmt(x: float | None, digits: int = 4) -> str:
    """A number for a table cell: ``digits`` significant digits, ``n/a`` for None."""
    return "n/a" if x is None else f"{x:.{digits}g}"


def subset_rows(rows: np.ndarray, m: int, seed: int) -> np.ndarray:
    """``m`` rows of ``rows`` drawn without replacement by ``seed`` (kept in order), or all."""
    if m >= rows.shape[0]:
        return rows
    return rows[np.sort(np.random.default_rng(seed).choice(rows.shape[0], m, replace=False))]


class EvalContext:
    """What one evaluation gives its metrics; each expensive input is computed once, on first use.

    ``options`` holds the metric settings of the evaluation (``fid_bootstrap``, ``kid_subsets``,
    ``pr_k``, ... as :class:`~gan_models.metrics.config.EvaluateParams` names them, plus any a
    caller adds for its own metrics).
    """

    def __init__(
        self,
        *,
        images: torch.Tensor,
        labels: np.ndarray | None,
        extractor: FeatureExtractor,
        real_train: ImageSet,
        real_test: ImageSet,
        train_split: str,
        test_split: str,
        seed: int,
        options: dict[str, Any],
        cache_dir: Any = None,
        max_reference_features: int = 10000,
        progress: bool = False,
    ) -> None:
        self.images = images  # (n, C, H, W) in [-1, 1]
        self.labels = labels  # (n,) or None
        self.extractor = extractor
        self.real_train = real_train
        self.real_test = real_test
        self.train_split = train_split  # names of the splits in lineage and cache keys
        self.test_split = test_split
        self.seed = seed
        self.options = options
        self.n_samples = int(images.shape[0])
        self._ref_kw = {
            "cache_dir": cache_dir,
            "max_features": max_reference_features,
            "progress": progress,
        }
        self._progress = progress

    @cached_property
    def reference(self) -> ReferenceStats:
        """Statistics (and a stored feature subset) of the real train split: the reference."""
        return reference_stats(
            self.real_train.images, self.extractor, split=self.train_split, **self._ref_kw
        )

    @cached_property
    def test_reference(self) -> ReferenceStats:
        """Statistics of the real test split (FID floor, IS of real images, baselines)."""
        return reference_stats(
            self.real_test.images, self.extractor, split=self.test_split, **self._ref_kw
        )

    @cached_property
    def _features_and_logits(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self.extractor.features_and_logits(self.images, progress=self._progress)

    @property
    def features(self) -> np.ndarray:
        """Features (n, D) float64 of the generated images."""
        return self._features_and_logits[0]

    @property
    def logits(self) -> np.ndarray | None:
        """Logits (n, K) float64 of the generated images, None without a classifier head."""
        return self._features_and_logits[1]

    def provides(self, needs: Iterable[Need]) -> bool:
        """Whether every one of ``needs`` is available (labels and logits may be missing)."""
        needs = set(needs)
        if Need.LABELS in needs and self.labels is None:
            return False
        return not (Need.LOGITS in needs and self.logits is None)

    def prepare(self, needs: Iterable[Need]) -> None:
        """Compute what ``needs`` name now, once (features and logits in one pass)."""
        needs = set(needs)
        if needs & {Need.REFERENCE}:
            _ = self.reference
        if needs & {Need.TEST_REFERENCE}:
            _ = self.test_reference
        if needs & {Need.FEATURES, Need.LOGITS}:
            _ = self._features_and_logits

    def lineage(self, n_real: int | None, n_fake: int, **extra: Any) -> dict[str, Any]:
        """A metric result's lineage: extractor, seed, reference split, sample counts."""
        return {
            "extractor": self.extractor.lineage(),
            "seed": self.seed,
            "reference_split": self.train_split,
            "n_real": n_real,
            "n_fake": n_fake,
            **extra,
        }

    def subset(self, rows: np.ndarray, m: int) -> np.ndarray:
        """``m`` rows of ``rows`` chosen by the evaluation's seed (all when there are fewer)."""
        return subset_rows(rows, m, self.seed)
