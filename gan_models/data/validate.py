"""The validation stage: per-image statistics checked by a Great Expectations suite.

Images are not tabular, so each image becomes one row of statistics (shape, dtype, pixel range,
finiteness, a content hash, its label and that label's share of the set). The suite in
``gan_models/data/expectations/image_stats.json`` states the rules over that table; its thresholds
are suite parameters filled from the ``validate`` section of ``params/data.yaml``. A checkpoint
runs the suite in an ephemeral GX context (no shared ``gx/`` state to go stale or collide between
runs) and writes HTML data docs to the report directory, which is swapped into place whole.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from gan_models.config import Section
from gan_models.data.format import KINDS, read_meta
from gan_models.errors import DataError
from gan_models.utils.io import atomic_dir, sha256_file

SUITE_PATH = Path(__file__).parent / "expectations" / "image_stats.json"
ROW_INDEX = "row"
STATS_COLUMNS = [
    "index",
    "label",
    "channels",
    "height",
    "width",
    "shape",
    "dtype",
    "min",
    "max",
    "mean",
    "std",
    "sha1",
    "finite",
    "class_share",
]


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


@dataclass
class FailedRule:
    """One failed expectation: which rule, what was seen, and example rows (image indices)."""

    rule: str
    expectation: str
    column: str | None
    description: str
    observed: str
    rows: list[int] = field(default_factory=list)
    n_rows: int | None = None
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One summary line: rule, expectation, what was expected and seen, and example rows."""
        where = f"{self.expectation}" + (f" on {self.column!r}" if self.column else "")
        text = f"{self.rule} ({where}): expected {self.description}; {self.observed}"
        if self.rows:
            more = f" of {self.n_rows}" if self.n_rows and self.n_rows > len(self.rows) else ""
            text += f"; rows{more}: {', '.join(map(str, self.rows))}"
            if self.files:
                text += f" (files: {', '.join(self.files)})"
        return text


@dataclass
class ValidationResult:
    """What :func:`validate_table` found; ``failures`` is empty when every rule held."""

    name: str
    success: bool
    n_images: int
    n_rules: int
    failures: list[FailedRule]
    report_dir: Path | None = None

    @property
    def docs_index(self) -> Path | None:
        """The data docs entry page, when a report directory was written."""
        return None if self.report_dir is None else self.report_dir / "index.html"

    def summary(self) -> str:
        """One line on success; on failure a header plus one line per failed rule."""
        docs = f" (data docs: {self.docs_index})" if self.docs_index else ""
        if self.success:
            return (
                f"validate {self.name}: OK, {self.n_images} images passed "
                f"{self.n_rules} expectations{docs}"
            )
        head = (
            f"validate {self.name}: FAILED {len(self.failures)} of {self.n_rules} expectations "
            f"on {self.n_images} images{docs}"
        )
        return "\n".join([head, *(f"  - {f.line()}" for f in self.failures)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "success": self.success,
            "n_images": self.n_images,
            "n_rules": self.n_rules,
            "failures": [asdict(f) for f in self.failures],
        }


def _image_hash(img: np.ndarray) -> str:
    # dtype and shape are part of the identity: equal bytes in another layout are another image.
    h = hashlib.sha1(f"{img.dtype.str}{img.shape}".encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def _row_stats(img: np.ndarray) -> dict[str, Any]:
    """Statistics of one (C, H, W) image; min/max/mean/std over its finite pixels."""
    x = img.astype(np.float64, copy=False)
    finite = bool(np.isfinite(x).all())
    if not finite:
        # +-inf stay visible as the extremes for the range rules; NaN is left to the finiteness
        # rule, so it is dropped here.
        x = x[~np.isnan(x)]
    c, h, w = img.shape
    empty = x.size == 0
    with np.errstate(invalid="ignore", over="ignore"):
        return {
            "channels": c,
            "height": h,
            "width": w,
            "shape": f"{c}x{h}x{w}",
            "dtype": str(img.dtype),
            "min": math.nan if empty else float(x.min()),
            "max": math.nan if empty else float(x.max()),
            "mean": math.nan if empty else float(x.mean()),
            "std": math.nan if empty else float(x.std()),
            "sha1": _image_hash(img),
            "finite": finite,
        }


def image_stats_table(
    images: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | Sequence[int] | None = None,
) -> pd.DataFrame:
    """One row of statistics per image, indexed by the image's position.

    ``images`` is an (N, C, H, W) array or a list of per-image (C, H, W) or (H, W) arrays, so sets
    of mixed sizes or channel counts can be described (and then rejected by the suite).
    """
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise DataError(f"images must be an (N, C, H, W) array, got shape {images.shape}")
    rows = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.ndim == 2:  # (H, W) grey image
            img = img[None]
        if img.ndim != 3:
            raise DataError(f"image {i}: expected shape (C, H, W) or (H, W), got {img.shape}")
        rows.append({"index": i, **_row_stats(img)})
    table = pd.DataFrame(rows, columns=[c for c in STATS_COLUMNS if c not in ("label",)])
    if not rows:  # typed empty columns, so the suite sees an empty table rather than objects
        table = table.astype(
            {"index": "int64", "channels": "int64", "height": "int64", "width": "int64"}
            | {c: "float64" for c in ("min", "max", "mean", "std")}
            | {"finite": "bool"}
        )
    if labels is not None:
        lab = np.asarray(labels)
        if lab.ndim != 1 or lab.shape[0] != len(rows):
            raise DataError(f"labels must have shape ({len(rows)},), got {lab.shape}")
        table["label"] = lab.astype(np.int64)
        share = table["label"].map(table["label"].value_counts(normalize=True))
        table["class_share"] = share.astype(np.float64)
    else:
        table["label"] = pd.array([None] * len(rows), dtype="Int64")
        table["class_share"] = np.full(len(rows), np.nan)
    table = table[STATS_COLUMNS]
    table.index = pd.RangeIndex(len(rows), name=ROW_INDEX)
    return table


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


def _short(values: Sequence[Any], n: int) -> str:
    shown = [v if not isinstance(v, float) else float(f"{v:.6g}") for v in list(values)[:n]]
    return repr(shown)


def _row_of(item: Any) -> int:
    # GX reports each unexpected row as its index value, or as a dict holding the named index.
    return int(item[ROW_INDEX] if isinstance(item, dict) else item)


def _describe_failure(
    res: Any,
    table: pd.DataFrame,
    sp: dict[str, Any],
    params: ValidateParams,
    file_names: Sequence[str] | None,
) -> FailedRule:
    """Turn one failed GX expectation result into a rule, an observation and example rows."""
    cfg = res.expectation_config
    meta = cfg.meta or {}
    rule = meta.get("rule", cfg.type)
    column = cfg.kwargs.get("column")
    description = meta.get("description", cfg.type).format(**sp)
    r = res.result or {}
    n_ex = params.max_examples
    rows: list[int] = []
    n_rows: int | None = None
    if res.exception_info and res.exception_info.get("raised_exception"):
        observed = f"the check raised: {res.exception_info.get('exception_message')}"
    elif "unexpected_count" in r:
        rows = [_row_of(i) for i in r.get("partial_unexpected_index_list") or []][:n_ex]
        n_rows = int(r["unexpected_count"])
        observed = (
            f"{n_rows} image(s) break it, values e.g. {_short(r['partial_unexpected_list'], 5)}"
        )
        if rule == "class_balance":
            counts = table["label"].value_counts().sort_index()
            bad = counts[(counts / len(table) < sp["class_share_min"] - 1e-12)]
            bad = pd.concat([bad, counts[counts / len(table) > sp["class_share_max"] + 1e-12]])
            shares = ", ".join(f"class {c}: {n}/{len(table)}" for c, n in bad[:n_ex].items())
            more = f" and {len(bad) - n_ex} more" if len(bad) > n_ex else ""
            observed = f"{shares}{more} ({len(counts)} class(es) present)"
    elif rule == "duplicates":
        dup = table.index[table["sha1"].duplicated(keep="first")]
        rows = [int(i) for i in dup[:n_ex]]
        n_rows = len(dup)
        if len(table):
            frac = len(dup) / len(table)
            observed = f"{len(dup)} image(s) repeat an earlier one (fraction {frac:.4g})"
            if len(dup):
                first = table.index[table["sha1"] == table.at[dup[0], "sha1"]][0]
                observed += f", e.g. row {dup[0]} repeats row {first}"
        else:
            observed = "no images to compare"
    elif "partial_missing_list" in r:
        observed = f"missing classes {_short(r['partial_missing_list'], 20)}"
    else:
        observed = f"observed {r.get('observed_value')!r}"
        if rule == "min_count":
            observed = f"found {r.get('observed_value')} image(s)"
    files = [str(file_names[i]) for i in rows if i < len(file_names)] if file_names else []
    return FailedRule(
        rule=rule,
        expectation=cfg.type,
        column=column,
        description=description,
        observed=observed,
        rows=rows,
        n_rows=n_rows,
        files=files,
    )


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
            _describe_failure(r, table, sp, params, file_names)
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


def _load_raw(raw_dir: Path, params: ValidateParams) -> tuple[dict, dict[str, np.ndarray], Any]:
    """Arrays and labels of a dataset directory, empty arrays allowed (the suite rejects them)."""
    meta = read_meta(raw_dir)
    kind = meta.get("kind", "images")
    if kind not in KINDS:
        raise DataError(f"{raw_dir / 'meta.json'}: unknown kind {kind!r}")
    names = list(KINDS[kind]) + (["labels"] if "labels.npy" in meta.get("sha256", {}) else [])
    loaded = {}
    for key in names:
        file = raw_dir / f"{key}.npy"
        if not file.is_file():
            raise DataError(f"{file} is missing (listed in {raw_dir / 'meta.json'})")
        if params.verify_sha256:
            want, got = meta.get("sha256", {}).get(f"{key}.npy"), sha256_file(file)
            if want != got:
                raise DataError(f"{file}: sha256 {got} does not match meta.json's {want}")
        try:
            loaded[key] = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{file}: not a readable .npy array ({e})") from None
    labels = loaded.pop("labels", None)
    for key, arr in loaded.items():
        if arr.ndim != 4:
            raise DataError(f"{raw_dir / (key + '.npy')}: expected (N, C, H, W), got {arr.shape}")
    return meta, loaded, labels


def _declared_shape(meta: dict[str, Any], key: str) -> list[int] | None:
    """The (C, H, W) that meta.json declares for array ``key``, if it declares one."""
    shape = (meta.get("arrays") or {}).get(key)
    return list(shape[1:]) if isinstance(shape, list) and len(shape) == 4 else None


def validate_dataset(
    raw_dir: str | Path, params: ValidateParams, *, report_dir: str | Path
) -> ValidationResult:
    """Validate a dataset directory (raw uint8 or processed float32) against the suite.

    The dataset's name is its directory name. Paired and unpaired datasets are validated one
    array at a time (``NAME/a``, ``NAME/b``, each with its own data docs page); their failures are
    merged into one result whose rules are prefixed with the array name.
    """
    raw_dir = Path(raw_dir)
    name = raw_dir.name
    meta, arrays, labels = _load_raw(raw_dir, params)
    file_names = meta.get("file_names") or meta.get("files")
    if file_names is not None and not isinstance(file_names, list):
        file_names = None
    if len(arrays) == 1:
        ((key, images),) = arrays.items()
        table = image_stats_table(images, labels)
        return validate_table(
            table,
            params,
            name=name,
            report_dir=report_dir,
            num_classes=meta.get("num_classes"),
            expected_shape=_declared_shape(meta, key),
            file_names=file_names,
        )
    # Several arrays: one report directory each, under the dataset's report directory.
    report_dir = Path(report_dir)
    results = []
    for i, (key, images) in enumerate(arrays.items()):
        table = image_stats_table(images, labels if i == 0 else None)
        results.append(
            validate_table(
                table,
                params,
                name=f"{name}/{key}",
                report_dir=report_dir / key,
                num_classes=meta.get("num_classes") if i == 0 else None,
                expected_shape=_declared_shape(meta, key),
                file_names=file_names if i == 0 else None,
            )
        )
    failures = []
    for key, res in zip(arrays, results, strict=True):
        for f in res.failures:
            f.rule = f"{key}: {f.rule}"
            failures.append(f)
    return ValidationResult(
        name=name,
        success=not failures,
        n_images=sum(r.n_images for r in results),
        n_rules=sum(r.n_rules for r in results),
        failures=failures,
        report_dir=None,
    )
