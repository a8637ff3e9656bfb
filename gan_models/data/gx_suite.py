"""The Great Expectations suite over the image-statistics table: its thresholds and its run.

The suite in ``gan_models/data/expectations/image_stats.json`` states the rules over the table of
:mod:`gan_models.data.image_stats`; its thresholds are suite parameters filled from the
``validate`` section of ``params/data.yaml`` (:class:`ValidateParams`). A checkpoint runs the
suite in an ephemeral GX context (no shared ``gx/`` state to go stale or collide between runs)
and writes HTML data docs to the report directory, which is swapped into place whole; what
failed is reported by :mod:`gan_models.data.validation_report`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from gan_models.config import Section
from gan_models.data.validation_report import ValidationResult, describe_failure
from gan_models.errors import DataError
from gan_models.utils.io import atomic_dir

SUITE_PATH = Path(__file__).parent / "expectations" / "image_stats.json"


class ValidateParams(Section):
    """Thresholds of the validation stage (``validate:`` in params/data.yaml)."""

    min_count: int = Field(100, ge=0, description="fewest images a dataset may hold")
    image_shape: tuple[int, int, int] | None = Field(
        None,
        description="(C, H, W) every image must have; None = the shape meta.json declares, "
        "else the most common shape",
    )
    channels: list[int] = Field([1, 3], min_length=1, description="allowed channel counts")
    dtypes: list[Literal["uint8", "float32"]] = Field(
        ["uint8", "float32"], min_length=1, description="allowed pixel dtypes"
    )
    uint8_range: tuple[float, float] = Field((0, 255), description="pixel range of uint8 images")
    float_range: tuple[float, float] = Field(
        (-1.0, 1.0), description="pixel range of float images (the processed format)"
    )
    max_duplicate_fraction: float = Field(
        0.01, ge=0, le=1, description="largest fraction of images that repeat an earlier image"
    )
    labels: list[int] | None = Field(
        None, description="declared label set; None = 0..num_classes-1 from meta.json"
    )
    min_classes: int = Field(2, ge=1, description="fewest distinct labels in a labelled set")
    class_balance_factor: float = Field(
        2.0,
        ge=1,
        description="each class's share must lie within [1/(f*K), f/K] for K declared classes",
    )
    verify_sha256: bool = Field(True, description="check the files against meta.json first")
    max_examples: int = Field(10, ge=1, description="example rows listed per failed rule")


def _suite_parameters(
    table: pd.DataFrame,
    params: ValidateParams,
    *,
    num_classes: int | None,
    expected_shape: Sequence[int] | None,
) -> dict[str, Any]:
    """Values for the suite's ``$PARAMETER`` placeholders, from params and the dataset's meta."""
    shape = params.image_shape or expected_shape
    if shape is None and len(table):
        shape_str = str(table["shape"].mode().iloc[0])
    else:
        shape_str = "x".join(str(int(s)) for s in shape) if shape is not None else ""
    dtype = str(table["dtype"].mode().iloc[0]) if len(table) else "uint8"
    lo, hi = (
        params.uint8_range if np.issubdtype(np.dtype(dtype), np.integer) else params.float_range
    )
    if params.labels is not None:
        label_set = sorted(set(params.labels))
    elif num_classes is not None:
        label_set = list(range(int(num_classes)))
    else:
        label_set = sorted(int(v) for v in table["label"].dropna().unique())
    k = max(len(label_set), 1)
    return {
        "min_count": params.min_count,
        "dtypes": list(params.dtypes),
        "channels": list(params.channels),
        "shapes": [shape_str] if shape_str else [],
        "pixel_lo": float(lo),
        "pixel_hi": float(hi),
        "max_duplicate_fraction": params.max_duplicate_fraction,
        "min_unique_fraction": 1.0 - params.max_duplicate_fraction,
        "label_set": label_set,
        "min_classes": params.min_classes,
        "class_share_min": 1.0 / (params.class_balance_factor * k),
        "class_share_max": min(1.0, params.class_balance_factor / k),
    }


def load_suite_definition(path: str | Path = SUITE_PATH) -> dict[str, Any]:
    """The suite as stored in the repository (GX's ExpectationSuite JSON)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read the expectation suite ({e})") from None


def _gx_context(docs_dir: Path | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites["report"] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir.resolve()),  # GX wants it absolute
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,  # no network calls from a pipeline stage
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def validate_table(
    table: pd.DataFrame,
    params: ValidateParams,
    *,
    name: str,
    report_dir: str | Path | None = None,
    num_classes: int | None = None,
    expected_shape: Sequence[int] | None = None,
    file_names: Sequence[str] | None = None,
) -> ValidationResult:
    """Run the image-stats suite over ``table`` (from :func:`image_stats_table`).

    With ``report_dir`` the HTML data docs (and ``summary.json``) are written there, replacing
    what was there before as a whole.
    """
    import great_expectations as gx

    sp = _suite_parameters(table, params, num_classes=num_classes, expected_shape=expected_shape)
    definition = load_suite_definition()
    labelled = bool(table["label"].notna().any())
    definition["expectations"] = [
        e
        for e in definition["expectations"]
        if labelled or (e.get("meta") or {}).get("needs") != "labels"
    ]
    suite_name = definition.pop("name")

    def run(docs_dir: Path | None) -> ValidationResult:
        context = _gx_context(docs_dir)
        asset_name = name.replace("/", "-")
        batch_def = (
            context.data_sources.add_pandas("images")
            .add_dataframe_asset(asset_name)
            .add_batch_definition_whole_dataframe("all")
        )
        suite = context.suites.add(gx.ExpectationSuite(name=suite_name, **definition))
        vdef = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}-{asset_name}", data=batch_def, suite=suite)
        )
        actions = []
        if docs_dir is not None:
            actions.append(gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["report"]))
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"validate-{asset_name}",
                validation_definitions=[vdef],
                actions=actions,
                result_format={
                    "result_format": "SUMMARY",
                    "partial_unexpected_count": params.max_examples,
                },
            )
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": table}, expectation_parameters=sp)
        (suite_result,) = outcome.run_results.values()
        failures = [
            describe_failure(r, table, sp, params.max_examples, file_names)
            for r in suite_result.results
            if not r.success
        ]
        return ValidationResult(
            name=name,
            success=not failures,
            n_images=len(table),
            n_rules=len(suite_result.results),
            failures=failures,
        )

    if report_dir is None:
        return run(None)
    report_dir = Path(report_dir)
    with atomic_dir(report_dir) as tmp:
        result = run(tmp)
        (tmp / "summary.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    result.report_dir = report_dir
    return result
