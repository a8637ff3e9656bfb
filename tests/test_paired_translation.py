"""Paired evaluation of an unpaired translation: a pair that keeps its codepoints (twemoji-noto)
is scored against the true counterpart of each held-out input, next to the untranslated input.

The emoji packages are built in their published layout with the helpers of
``test_colour_sources``. In the evaluation test every Noto drawing is the Twemoji drawing of the
same emoji plus 16 in every channel (both opaque), so the untranslated input is off from its
true counterpart by 16/255 everywhere and its PSNR has a closed form, 20 log10(255 / 16), for
every pair that is matched by codepoint and for none that is not.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_colour_sources import build_package, entries, pin

from gan_models.data import emoji as emoji_mod
from gan_models.data import fetch, read_imageset, write_imageset
from gan_models.data.pairing import split_counterparts
from gan_models.data.preprocess import PreprocessParams, preprocess_dataset, preprocess_images
from gan_models.data.splits import load_unpaired_split, to_model_range
from gan_models.errors import DataError
from gan_models.metrics.paired_translation import paired_translation_metrics
from gan_models.metrics.report import format_metrics_table, metrics_markdown
from gan_models.metrics.ssim import image_quality
from gan_models.training import train
from gan_models.training.params import TrainParams

OFFSET = 16  # Noto's drawing = Twemoji's + OFFSET, in every pixel and channel


def base_art(i: int) -> np.ndarray:
    """Twemoji's drawing of emoji ``i``: opaque RGB (64, 64, 3) in 0..223, distinct per i."""
    y, x = np.mgrid[:64, :64]
    r = (x * 3 + y + i * 23) % 224
    g = (y * 3 + i * 41) % 224
    b = ((x ^ y) * 2 + i * 7) % 224
    return np.stack([r, g, b], -1).astype(np.uint8)


def build_offset_package(root: Path, vendor: str) -> Path:
    """``root/NAME-16.0.0.tgz`` in the published layout, the drawings of :func:`base_art` (Noto:
    plus OFFSET), opaque RGBA PNGs."""
    v = emoji_mod.VENDORS[vendor]
    add = OFFSET if vendor == "noto" else 0
    es = entries()
    files = {
        "package.json": json.dumps({"name": v.package.name, "version": "16.0.0"}).encode(),
        "emoji.json": json.dumps([{k: e[k] for k in e if k not in ("i", "art")} for e in es]),
    }
    for e in es:
        if e[f"has_img_{v.image_set}"]:
            rgb = base_art(e["art"]) + add
            rgba = np.concatenate([rgb, np.full((64, 64, 1), 255, np.uint8)], -1)
            buf = io.BytesIO()
            Image.fromarray(rgba, mode="RGBA").save(buf, "PNG")
            files[f"img/{v.image_set}/64/{e['image']}"] = buf.getvalue()
    root.mkdir(parents=True, exist_ok=True)
    out = root / v.package.tarball
    with tarfile.open(out, "w:gz") as tar:
        for name, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def tiny_cyclegan(path: Path, size: int) -> TrainParams:
    return TrainParams(
        model={"family": "cyclegan", "width": 8, "res_blocks": 1},
        data={"path": str(path), "image_size": size, "split": "train"},
        loss={},
        train={"steps": 2, "batch_size": 4, "checkpoint_every": 2, "progress": False},
    )


def evaluate(run: Path, features_dir: Path) -> dict:
    from gan_models.evaluation import evaluate_run
    from gan_models.metrics.config import EvaluateParams, FeaturesParams

    ev = EvaluateParams(
        n_samples=50,
        fid_bootstrap=5,
        kid_subsets=3,
        memorization_samples=5,
        pr_k=2,
        dc_k=2,
        is_splits=2,
    )
    return evaluate_run(run, features=FeaturesParams(), evaluate=ev, features_dir=features_dir)


def features_for(root: Path) -> Path:
    """A domain classifier on 3x64x64 images (what FID and the main table need), tiny."""
    from gan_models.metrics.config import FeaturesParams
    from gan_models.metrics.extractors import train_features

    for split, n in (("train", 24), ("val", 6), ("test", 6)):
        x = np.stack([base_art(i).transpose(2, 0, 1) for i in range(n)])
        write_imageset(
            root / "imgs" / split, {"images": x}, labels=np.arange(n) % 3, meta={"name": "imgs"}
        )
    params = FeaturesParams(domain={"epochs": 1, "batch_size": 8, "width": 4, "hidden": 8})
    train_features(root / "imgs", params, root / "features")
    return root / "features"


def test_cyclegan_on_a_pair_scores_translations_against_true_counterparts(tmp_path, monkeypatch):
    monkeypatch.setenv("GANOPS_CACHE_DIR", str(tmp_path / "cache"))
    pkgs = tmp_path / "pkgs"
    for vendor in ("twemoji", "noto"):
        pin(monkeypatch, vendor, build_offset_package(pkgs, vendor))
    meta = fetch("twemoji-noto", "pair", path=pkgs, out_root=tmp_path / "raw")
    assert meta["pairing"] == {
        "by": "codepoints",
        "source": "emoji",
        "drawn_by": {"a": "twemoji", "b": "noto"},
        "path": str(pkgs.resolve()),
    }
    split = {"train": 0.6, "val": 0.1, "test": 0.3}  # 14 emoji a side: 4 held out
    params = PreprocessParams(image_size=64, split=split, progress=False, workers=1)
    preprocess_dataset(tmp_path / "raw/pair", tmp_path / "proc/pair", params)
    # the split keeps the codepoints of its rows, as split_codepoints derives them from the raw set
    test_meta = json.loads((tmp_path / "proc/pair/test/meta.json").read_text())
    assert test_meta["codepoints"] == emoji_mod.split_codepoints(
        tmp_path / "raw/pair", tmp_path / "proc/pair", "test"
    )
    assert test_meta["pairing"] == meta["pairing"]

    run = tmp_path / "run"
    train(tiny_cyclegan(tmp_path / "proc/pair", 64), run)
    result = evaluate(run, features_for(tmp_path))
    p = result["paired_translation"]
    test = load_unpaired_split(tmp_path / "proc/pair", "test", 64)  # (N, 3, 64, 64) in [-1, 1]
    closed_form = 20 * math.log10(255 / OFFSET)  # identity PSNR of every pair matched by codepoint
    for d, k in (("a_to_b", "a"), ("b_to_a", "b")):
        m = p[d]
        assert m["n_pairs"] == len(test[k]) == len(test_meta["codepoints"][k]) >= 1
        assert m["identity"]["psnr"] == pytest.approx(closed_form, rel=1e-5)
        # the true counterparts, drawn directly: Noto = Twemoji + OFFSET
        x = torch.from_numpy(test[k])
        y = (x + (OFFSET / 127.5 if k == "a" else -OFFSET / 127.5)).clamp(-1, 1)
        q = image_quality(x, y, sigma=1.5)
        assert m["identity"]["psnr"] == pytest.approx(q["psnr"].mean().item(), rel=1e-5)
        assert m["identity"]["ssim"] == pytest.approx(q["ssim"].mean().item(), rel=1e-5)
        assert 0 < m["identity"]["ssim"] < 1 and 0 <= m["translated"]["ssim"] <= 1
        assert np.isfinite(m["translated"]["psnr"])
        assert m["psnr_gain"] == pytest.approx(m["translated"]["psnr"] - m["identity"]["psnr"])
        assert m["paired_by"] == {
            "by": "codepoints",
            "source": "emoji",
            "drawn_by": "noto" if k == "a" else "twemoji",
        }
    assert p["ssim_sigma"] == 1.5 and "[0, 1]" in p["convention"]
    # the translated figures are those of the run's generators on the same pairs
    counter = split_counterparts(tmp_path / "proc/pair", "test")
    from gan_models.sampling import RunGenerator

    gen = RunGenerator.from_run_dir(run)
    again = paired_translation_metrics(
        gen.nets,
        {
            "a_to_b": (torch.from_numpy(test["a"]), to_model_range(counter["a"].images, 64)),
            "b_to_a": (torch.from_numpy(test["b"]), to_model_range(counter["b"].images, 64)),
        },
    )
    for d in ("a_to_b", "b_to_a"):
        assert again[d]["translated"]["psnr"] == pytest.approx(p[d]["translated"]["psnr"])
    with pytest.raises(DataError, match=r"float in \[-1, 1\]"):  # stored uint8: not scaled
        paired_translation_metrics(
            gen.nets,
            {"a_to_b": (torch.from_numpy(test["a"]), torch.from_numpy(counter["a"].images))},
        )
    # shown in the table, the model card's markdown, the summary and metrics.json
    s = result["summary"]
    assert s["paired_psnr_identity_a_to_b"] == p["a_to_b"]["identity"]["psnr"]
    assert s["paired_ssim_b_to_a"] == p["b_to_a"]["translated"]["ssim"]
    table = format_metrics_table(result)
    assert "PSNR A->B (paired)" in table and "SSIM B->A (paired)" in table
    assert "untranslated input" in metrics_markdown(result)
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["paired_translation"]["a_to_b"]["n_pairs"] == p["a_to_b"]["n_pairs"]
    assert on_disk["summary"]["paired_psnr_a_to_b"] == pytest.approx(s["paired_psnr_a_to_b"])


def test_counterparts_go_through_preprocess_as_the_vendor_set_does(tmp_path, monkeypatch):
    """At a smaller size than the drawings, the counterpart of each held-out Twemoji image is,
    byte for byte, the row that preprocess writes for Noto's drawing of the same emoji."""
    monkeypatch.setenv("GANOPS_CACHE_DIR", str(tmp_path / "cache"))
    pkgs = tmp_path / "pkgs"
    for vendor in ("twemoji", "noto"):
        pin(monkeypatch, vendor, build_package(pkgs, vendor))
    fetch("twemoji-noto", "pair", path=pkgs, out_root=tmp_path / "raw")
    fetch("noto", "noto", path=pkgs / emoji_mod.VENDORS["noto"].package.tarball,
          out_root=tmp_path / "raw")  # fmt: skip
    params = PreprocessParams(image_size=16, interpolation="bicubic", progress=False, workers=1)
    preprocess_dataset(tmp_path / "raw/pair", tmp_path / "proc/pair", params)
    preprocess_dataset(
        tmp_path / "raw/noto",
        tmp_path / "proc/noto",
        params.model_copy(update={"stratify": False}),
    )
    noto_by_cp = {}  # Noto's drawings as preprocess wrote them, by codepoint
    cp_of_file = {f"img/google/64/{e['image']}": e["unified"] for e in entries()}
    for split in ("train", "val", "test"):
        ds = read_imageset(tmp_path / "proc/noto" / split)
        for name, img in zip(ds.meta["file_names"], ds.images, strict=True):
            noto_by_cp[cp_of_file[name]] = img
    counter = split_counterparts(tmp_path / "proc/pair", "test")
    cps = counter["a"].keys
    assert counter["a"].images.shape == (len(cps), 3, 16, 16) and counter["a"].drawn_by == "noto"
    np.testing.assert_array_equal(counter["a"].images, np.stack([noto_by_cp[c] for c in cps]))
    # the other way: Twemoji's drawings of b's emoji, from the cache when the folder is gone
    npm_cache = tmp_path / "cache/downloads/npm"  # where `ganops data fetch` leaves them
    npm_cache.mkdir(parents=True)
    for vendor in ("twemoji", "noto"):
        tarball = emoji_mod.VENDORS[vendor].package.tarball
        (pkgs / tarball).rename(npm_cache / tarball)
    pkgs.rmdir()
    got = split_counterparts(tmp_path / "proc/pair", "test")
    np.testing.assert_array_equal(got["a"].images, counter["a"].images)
    want = emoji_mod.counterparts(got["b"].keys, "twemoji", cache_dir=tmp_path / "cache/downloads")
    assert got["b"].drawn_by == "twemoji"
    np.testing.assert_array_equal(got["b"].images, preprocess_images(want, params))


def test_sets_without_codepoints_keep_todays_splits_and_metrics(tmp_path):
    """An unpaired set without codepoints: its splits' meta.json as before, no pairing."""
    rng = np.random.default_rng(0)
    pair = {k: rng.integers(0, 255, (20, 1, 8, 8)).astype(np.uint8) for k in "ab"}
    write_imageset(tmp_path / "raw/inv", pair, meta={"name": "inv"}, kind="unpaired")
    params = PreprocessParams(image_size=8, progress=False, workers=1)
    preprocess_dataset(tmp_path / "raw/inv", tmp_path / "proc/inv", params)
    meta = json.loads((tmp_path / "proc/inv/test/meta.json").read_text())
    assert set(meta) == {"name", "source", "origin", "format_version", "kind", "arrays", "sha256"}
    assert split_counterparts(tmp_path / "proc/inv", "test") is None
