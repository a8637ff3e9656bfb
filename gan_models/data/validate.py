"""The validation stage: a dataset directory's arrays checked by the image-statistics suite.

Each array of a raw (uint8) or processed (float32) dataset becomes a table of per-image
statistics (:mod:`gan_models.data.image_stats`) that the Great Expectations suite checks
(:mod:`gan_models.data.gx_suite`), with the shape and classes that meta.json declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gan_models.data.format import KINDS, read_meta
from gan_models.data.gx_suite import ValidateParams, ValidationResult, validate_table
from gan_models.data.image_stats import image_stats_table
from gan_models.errors import DataError
from gan_models.utils.io import sha256_file


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
