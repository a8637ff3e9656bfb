"""CycleGAN, SRGAN and StyleGAN: tiny real runs on CPU, exact resume, and family-specific maths."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from gan_models.config import load_params
from gan_models.data.format import write_imageset
from gan_models.errors import ConfigError, DataError
from gan_models.families import FAMILIES, cyclegan, srgan, stylegan
from gan_models.families.base import DataSpec, StepContext
from gan_models.metrics.ssim import gaussian_window, psnr, ssim
from gan_models.sampling import RunGenerator
from gan_models.training import StepInfo, train
from gan_models.training.generate import sample_latents
from gan_models.training.params import TrainParams

ZOO = ["cyclegan", "srgan", "stylegan"]
PARAMS_DIR = Path(__file__).resolve().parent.parent / "params"


def _bars(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n labelled 8x8 grey images: 3 classes of bright vertical bars on dark noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 0, :, 2 * y : 2 * y + 3] = 230
    return images, labels


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    images, labels = _bars()
    path = tmp_path_factory.mktemp("data") / "bars"
    write_imageset(path, {"images": images}, labels=labels, meta={"name": "bars"})
    return path


@pytest.fixture(scope="module")
def inverted(tmp_path_factory):
    """Unpaired domains: bars (a) and other bars with inverted intensities (b)."""
    a, _ = _bars(48, seed=0)
    b, _ = _bars(40, seed=1)
    path = tmp_path_factory.mktemp("data") / "inverted"
    write_imageset(path, {"a": a, "b": 255 - b}, meta={"name": "bars-inverted"}, kind="unpaired")
    return path


@pytest.fixture(scope="module")
def sr_pairs(tmp_path_factory):
    """Paired super-resolution data: 4x4 inputs (a), 8x8 targets (b)."""
    hr, _ = _bars()
    lr = hr.reshape(48, 1, 4, 2, 4, 2).mean((3, 5)).round().astype(np.uint8)  # 2x2 box average
    path = tmp_path_factory.mktemp("data") / "pairs"
    write_imageset(path, {"a": lr, "b": hr}, meta={"name": "bars-sr"}, kind="paired")
    return path


def tiny_params(family: str, data_path, model=None, loss=None, **train) -> TrainParams:
    t = {"steps": 2, "batch_size": 8, "checkpoint_every": 1, "log_every": 1, "progress": False}
    t.update(train)
    m = {"width": 8, "latent_dim": 8, "res_blocks": 1, "mapping_layers": 2}
    m = {"family": family, **{k: v for k, v in m.items() if f"model.{k}" in FAMILIES[family].reads}}
    lc: dict = {}
    if family == "srgan":
        m["scale"] = 2
    if family == "stylegan":
        lc = {"r1_gamma": 0.1, "r1_every": 2}
    if family == "cyclegan":
        lc = {"pool_size": 12}  # small, so the resume test draws from a full buffer
    m.update(model or {})
    lc.update(loss or {})
    return TrainParams(model=m, data={"path": str(data_path), "image_size": 8}, loss=lc, train=t)


def data_for(family, bars, inverted):
    return inverted if family == "cyclegan" else bars


def read_stats(run_dir):
    return [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]


def checkpoint(run_dir, step):
    return torch.load(run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=False)


def assert_same_state(a, b):
    for table in ("nets", "ema", "optims"):
        assert a[table].keys() == b[table].keys()
    for table in ("nets", "ema"):
        for net in a[table]:
            for k, v in a[table][net].items():
                assert torch.equal(v, b[table][net][k]), f"{table}.{net}.{k} differs"
    assert a["data"] == b["data"]


# ---------------------------------------------------------------------------- every family


EXPECTED_LOSSES = {
    "cyclegan": {"G/loss", "G/adv", "G/cycle", "G/identity", "D/loss", "D/A", "D/B"},
    "srgan": {"G/loss", "G/content", "G/adv", "G/psnr", "D/loss", "D/real", "D/fake"},
    "stylegan": {"G/loss", "D/loss", "D/real", "D/fake"},
}


@pytest.mark.parametrize("family", ZOO)
def test_family_trains_two_steps(family, bars, inverted, tmp_path):
    run = tmp_path / "run"
    result = train(tiny_params(family, data_for(family, bars, inverted)), run)
    assert result.steps == 2
    stats = read_stats(run)
    assert [s["step"] for s in stats] == [1, 2]
    for s in stats:
        losses = {k: v for k, v in s.items() if "/" in k}
        assert EXPECTED_LOSSES[family] <= losses.keys()
        assert all(np.isfinite(v) for v in losses.values())
    if family == "stylegan":  # lazy R1 every 2 steps: step 0 only
        assert "Dreg/loss" in stats[0] and "Dreg/loss" not in stats[1]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_00000001.pt",
        "step_00000002.pt",
    ]
    for name in ("config.yaml", "spec.json", "log.txt", "run.json", "generator.safetensors"):
        assert (run / name).is_file(), name
    assert (run / "samples" / "step_00000002.png").is_file()
    gen = RunGenerator.from_run_dir(run)
    images, labels = gen.generate(5, seed=3)
    assert images.shape == (5, 1, 8, 8) and labels is None
    assert images.min() >= -1 and images.max() <= 1
    again, _ = gen.generate(5, seed=3)
    assert torch.equal(images, again)


@pytest.mark.parametrize("family", ZOO)
def test_resume_equals_uninterrupted(family, bars, inverted, tmp_path):
    """Stop after step 3 (checkpoint at 2), resume: same weights, EMA, buffers, data, stats."""
    params = tiny_params(family, data_for(family, bars, inverted), steps=5, checkpoint_every=2)
    train(params, tmp_path / "a")

    def crash_at_3(info: StepInfo) -> None:
        if info.step == 3:
            raise RuntimeError("simulated crash between checkpoints")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(params, tmp_path / "b", callbacks=[crash_at_3])
    assert train(params, tmp_path / "b", resume=True).resumed_from == 2
    a, b = checkpoint(tmp_path / "a", 5), checkpoint(tmp_path / "b", 5)
    assert_same_state(a, b)
    if family == "cyclegan":  # the history is full and was drawn from: it must match too
        assert int(a["nets"]["history"]["a.count"]) == 12
        assert a["nets"]["history"]["a.images"].abs().sum() > 0
    if family == "stylegan":
        assert a["nets"]["G"]["mapping.w_avg"].abs().sum() > 0
    sa, sb = read_stats(tmp_path / "a"), read_stats(tmp_path / "b")
    assert [{k: v for k, v in s.items() if "/" in k} for s in sa] == [
        {k: v for k, v in s.items() if "/" in k} for s in sb
    ]


@pytest.mark.parametrize("family", ZOO)
def test_bf16_autocast_gives_finite_losses(family, bars, inverted, tmp_path):
    train(tiny_params(family, data_for(family, bars, inverted), amp="bf16"), tmp_path)
    for s in read_stats(tmp_path):
        assert all(np.isfinite(v) for k, v in s.items() if "/" in k)


# ---------------------------------------------------------------------------- CycleGAN


def _reference_pool_query(pool: list, size: int, x, swap, slot):
    """The reference implementation's per-image loop, given the same random draws."""
    out, j = [], 0
    for img in x:
        if len(pool) < size:
            pool.append(img.clone())
            out.append(img)
            continue
        if swap[j]:
            old = pool[slot[j]].clone()
            pool[slot[j]] = img.clone()
            out.append(old)
        else:
            out.append(img)
        j += 1
    return torch.stack(out)


def test_image_pool_matches_the_reference_loop():
    pool = cyclegan.ImagePool(size=5, channels=1, image_size=2)
    ref: list = []
    for step in range(6):
        x = torch.arange(8 * 4, dtype=torch.float32).reshape(8, 1, 2, 2) + 100 * step
        n_fill = max(0, min(8, 5 - len(ref)))
        state = torch.get_rng_state()
        got = pool.query(x)
        m = 8 - n_fill
        torch.set_rng_state(state)  # replay the pool's draws for the reference
        swap = (torch.rand(m) < 0.5).tolist() if m else []
        slot = torch.randint(0, 5, (m,)).tolist() if m else []
        want = _reference_pool_query(ref, 5, x, swap, slot)
        assert torch.equal(got, want), f"step {step}"
        assert torch.equal(pool.images, torch.stack(ref)), f"step {step}"
    assert int(pool.count) == 5
    # with 8 images per query, colliding slots occur: make sure the case was exercised
    assert len(slot) == 8 and len(set(slot)) < 8


def test_image_pool_of_size_zero_passes_fakes_through():
    pool = cyclegan.ImagePool(size=0, channels=1, image_size=2)
    x = torch.randn(3, 1, 2, 2)
    assert torch.equal(pool.query(x), x)


def test_cycle_loss_decreases(inverted, tmp_path):
    train(tiny_params("cyclegan", inverted, steps=30, lr=1e-3, checkpoint_every=30), tmp_path)
    cycle = [s["G/cycle"] for s in read_stats(tmp_path)]
    assert len(cycle) == 30
    assert np.mean(cycle[-5:]) < 0.6 * np.mean(cycle[:3])


def test_cyclegan_generate_translates_inputs_and_bank(inverted, tmp_path):
    train(tiny_params("cyclegan", inverted), tmp_path)
    gen = RunGenerator.from_run_dir(tmp_path)
    G = gen.nets["G"]
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    assert torch.equal(cyclegan.generate(gen.nets, x), G.G_AB(x))
    assert cyclegan.translate(gen.nets, x, "ba").shape == (3, 1, 8, 8)
    # 2-D latents pick remembered real inputs: index floor(Phi(z_0) * count)
    assert int(G.bank.count) == cyclegan.BANK_SIZE
    z = sample_latents(4, 8, seed=0)
    idx = (torch.special.ndtr(z[:, 0]) * cyclegan.BANK_SIZE).long()
    assert torch.equal(cyclegan.generate(gen.nets, z), G.G_AB(G.bank.images[idx]))
    assert G.bank.images[idx].min() >= -1 and G.bank.images.abs().sum() > 0


def test_reflect_pad_equals_torch():
    x = torch.randn(2, 3, 8, 7)
    for p in (1, 3):
        assert torch.equal(cyclegan.ReflectPad(p)(x), torch.nn.ReflectionPad2d(p)(x))


def test_sample_inputs_are_seeded_real_images(inverted, sr_pairs, bars, tmp_path):
    from gan_models.data.format import read_imageset

    data = read_imageset(inverted)
    p = tiny_params("cyclegan", inverted)
    spec = DataSpec(1, 8, kind="unpaired", input_size=8, input_channels=1)
    x = cyclegan.sample_inputs(p, spec, data, 5, seed=1)
    assert x.shape == (5, 1, 8, 8)
    assert torch.equal(x, cyclegan.sample_inputs(p, spec, data, 5, seed=1))
    assert not torch.equal(x, cyclegan.sample_inputs(p, spec, data, 5, seed=2))
    idx = cyclegan.seeded_indices(48, 5, 1)
    assert len(set(idx.tolist())) == 5
    assert torch.equal(x, torch.from_numpy(data.arrays["a"][idx.numpy()]).float() / 127.5 - 1)
    assert (
        cyclegan.seeded_indices(3, 7, 0).tolist()[3:6] == cyclegan.seeded_indices(3, 3, 0).tolist()
    )
    # SRGAN: the low-res side of a paired set, or downsampled images
    ps = tiny_params("srgan", sr_pairs)
    lr = srgan.sample_inputs(ps, DataSpec(1, 8, kind="paired"), read_imageset(sr_pairs), 3, 0)
    assert lr.shape == (3, 1, 4, 4)
    pi = tiny_params("srgan", bars)
    lr = srgan.sample_inputs(pi, DataSpec(1, 8), read_imageset(bars), 3, 0)
    assert lr.shape == (3, 1, 4, 4)


def test_cyclegan_needs_two_domains(bars, tmp_path):
    with pytest.raises(ConfigError, match="unpaired"):
        train(tiny_params("cyclegan", bars), tmp_path)


# ---------------------------------------------------------------------------- SRGAN


@pytest.mark.parametrize("scale", [2, 4])
def test_srgan_output_is_scale_times_input(scale):
    G = srgan.SRResNet(3, 3, width=8, n_blocks=1, scale=scale, input_size=5)
    out = G(torch.randn(2, 3, 5, 7))
    assert out.shape == (2, 3, 5 * scale, 7 * scale)


def test_srgan_pairs_from_images(bars, tmp_path):
    """From an images set the family downsamples: G maps 4x4 to 8x8 and the bank holds 4x4."""
    train(tiny_params("srgan", bars), tmp_path)
    gen = RunGenerator.from_run_dir(tmp_path)
    assert gen.nets["G"].bank.images.shape[-2:] == (4, 4)
    lr = srgan.downsample(torch.rand(3, 1, 8, 8) * 2 - 1, 2)
    assert lr.shape == (3, 1, 4, 4)
    assert srgan.generate(gen.nets, lr).shape == (3, 1, 8, 8)
    # bicubic antialiased downsampling keeps a constant image constant
    assert torch.allclose(srgan.downsample(torch.full((1, 1, 8, 8), 0.3), 4), torch.tensor(0.3))


def test_srgan_trains_on_paired_data(sr_pairs, tmp_path):
    train(tiny_params("srgan", sr_pairs), tmp_path)
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert spec["kind"] == "paired" and spec["input_size"] == 4 and spec["image_size"] == 8
    assert all(np.isfinite(s["G/content"]) for s in read_stats(tmp_path))
    with pytest.raises(ConfigError, match="model.scale"):
        train(tiny_params("srgan", sr_pairs, model={"scale": 4}), tmp_path / "x4")


def test_srgan_ssim_content(bars, tmp_path):
    p = tiny_params("srgan", bars, loss={"content": "ssim"})
    with pytest.raises(ConfigError, match="ssim"):
        train(p, tmp_path / "small")
    p.data.image_size = 16
    train(p, tmp_path / "r")
    assert all(np.isfinite(s["G/content"]) for s in read_stats(tmp_path / "r"))


def test_srgan_feature_content_uses_domain_classifier(bars, tmp_path):
    from gan_models.metrics.domain_classifier import fit_classifier, save_domain_classifier

    images, labels = _bars()
    model = fit_classifier(images, labels, num_classes=3, max_steps=2, width=4, hidden=8)
    save_domain_classifier(model, tmp_path / "clf")
    p = tiny_params("srgan", bars, loss={"content": "feature"})
    with pytest.raises(ConfigError, match="content_network"):
        train(p, tmp_path / "none")
    p.loss.content_network = str(tmp_path / "clf")
    train(p, tmp_path / "r")
    content = [s["G/content"] for s in read_stats(tmp_path / "r")]
    assert all(np.isfinite(c) and c > 0 for c in content)
    # the content term is the MSE of the classifier's conv features, frozen
    lossfn = srgan.content_loss(p, DataSpec(channels=1, image_size=8))
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    assert lossfn(x, x).item() == 0.0
    want = F.mse_loss(model.body[:-1](x), model.body[:-1](-x))
    assert torch.allclose(lossfn(x, -x), want)


def test_psnr_closed_form_and_reference():
    x = torch.rand(3, 2, 9, 9) * 1.8 - 0.9
    d = torch.tensor([0.1, 0.02, 0.5])
    y = x + d[:, None, None, None]
    # MSE = d^2 exactly, so PSNR = 10 log10(2^2 / d^2)
    want = 10 * torch.log10(4 / d**2)
    assert torch.allclose(psnr(x, y), want, atol=1e-4)
    ref = peak_signal_noise_ratio(y, x, data_range=2.0, reduction="none", dim=(1, 2, 3))
    assert torch.allclose(psnr(x, y), ref, atol=1e-4)
    assert torch.isinf(psnr(x, x)).all()


def _ssim_by_hand(x: np.ndarray, y: np.ndarray, sigma: float = 1.5) -> float:
    """Wang et al. 2004 as scikit-image computes it (gaussian_weights, population statistics,
    border of the window radius cropped), for one (C, H, W) pair in [-1, 1], in float64."""
    r = int(3.5 * sigma + 0.5)
    t = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    values = []
    for c in range(x.shape[0]):
        for i in range(r, x.shape[1] - r):
            for j in range(r, x.shape[2] - r):
                px = x[c, i - r : i + r + 1, j - r : j + r + 1]
                py = y[c, i - r : i + r + 1, j - r : j + r + 1]
                mx, my = (win * px).sum(), (win * py).sum()
                vx = (win * (px - mx) ** 2).sum()
                vy = (win * (py - my) ** 2).sum()
                cxy = (win * (px - mx) * (py - my)).sum()
                values.append(
                    (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
                )
    return float(np.mean(values))


def test_ssim_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 14, 13, generator=g) * 2 - 1
    y = (0.6 * x + 0.3 * torch.randn(2, 2, 14, 13, generator=g)).clamp(-1, 1)
    got = ssim(x, y)
    want = [_ssim_by_hand(x[i].double().numpy(), y[i].double().numpy()) for i in range(2)]
    assert torch.allclose(got.double(), torch.tensor(want, dtype=torch.float64), atol=1e-5)
    # torchmetrics' full SSIM map (reflect-padded) agrees where the window is inside the image
    _, full = structural_similarity_index_measure(
        y, x, data_range=2.0, reduction="none", return_full_image=True
    )
    interior = full[..., 5:-5, 5:-5].flatten(1).mean(1)
    assert torch.allclose(got, interior, atol=1e-5)
    # a smaller window for small images (sigma 0.5 -> 5x5)
    small = ssim(x[..., :6, :6], y[..., :6, :6], sigma=0.5)
    want = [
        _ssim_by_hand(x[i, :, :6, :6].double().numpy(), y[i, :, :6, :6].double().numpy(), 0.5)
        for i in range(2)
    ]
    assert torch.allclose(small.double(), torch.tensor(want, dtype=torch.float64), atol=1e-5)


def test_ssim_closed_forms():
    x = torch.rand(2, 1, 12, 12) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    # constant images: no variance, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.4, -0.2, (0.01 * 2) ** 2
    got = ssim(torch.full((1, 1, 12, 12), a), torch.full((1, 1, 12, 12), b))
    assert got.item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-5)
    assert gaussian_window(1.5).shape == (11, 11)
    assert gaussian_window(1.5).sum().item() == pytest.approx(1.0)
    with pytest.raises(DataError, match="window"):
        ssim(x[..., :8, :8], x[..., :8, :8])
    # differentiable: usable as a training loss
    y = x.clone().requires_grad_(True)
    (1 - ssim(y + 0.1 * torch.randn_like(y), x)).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- StyleGAN


@pytest.fixture(scope="module")
def style_run(bars, tmp_path_factory):
    run = tmp_path_factory.mktemp("stylegan")
    train(tiny_params("stylegan", bars, steps=3), run)
    return RunGenerator.from_run_dir(run)


def test_stylegan_same_seed_same_images_and_styles_matter(style_run):
    z1, z2 = sample_latents(4, 8, seed=1), sample_latents(4, 8, seed=2)
    a = stylegan.generate(style_run.nets, z1)
    assert torch.equal(a, stylegan.generate(style_run.nets, z1))
    b = stylegan.generate(style_run.nets, z2)
    assert (a - b).abs().amax((1, 2, 3)).min() > 1e-3  # every pair differs
    # seeded random noise is reproducible too
    r1 = stylegan.generate(style_run.nets, z1, noise="random", noise_seed=5)
    assert torch.equal(r1, stylegan.generate(style_run.nets, z1, noise="random", noise_seed=5))


def test_stylegan_style_mixing_crossover(style_run):
    nets = style_run.nets
    G = nets["G"]
    assert G.num_ws == 2 * int(math.log2(8)) - 2 == 4
    z1, z2 = sample_latents(3, 8, seed=1), sample_latents(3, 8, seed=2)
    img1, img2 = stylegan.generate(nets, z1), stylegan.generate(nets, z2)
    assert torch.allclose(stylegan.generate_mixed(nets, z1, z2, 0), img2, atol=1e-6)
    assert torch.allclose(stylegan.generate_mixed(nets, z1, z2, G.num_ws), img1, atol=1e-6)
    mid = stylegan.generate_mixed(nets, z1, z2, 2)
    assert (mid - img1).abs().max() > 1e-4 and (mid - img2).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="crossover"):
        stylegan.generate_mixed(nets, z1, z2, G.num_ws + 1)


def test_stylegan_truncation(style_run):
    nets = style_run.nets
    w_avg = nets["G"].mapping.w_avg
    assert w_avg.abs().sum() > 0  # tracked during training
    z = sample_latents(5, 8, seed=7)
    same = stylegan.generate(nets, z, psi=0.0)
    assert torch.allclose(same, same[:1].expand_as(same), atol=1e-6)
    # psi = 0 is the image of w_avg itself
    from_avg = nets["G"].synthesis(w_avg.expand(1, nets["G"].num_ws, -1))
    assert torch.allclose(same[:1], from_avg, atol=1e-6)
    half = stylegan.generate(nets, z, psi=0.5)
    assert not torch.allclose(half, same, atol=1e-4)


def test_w_avg_is_an_ema_of_w():
    m = stylegan.MappingNetwork(8, 8, num_ws=4, layers=2)
    z = torch.randn(6, 8)
    w = m(z)[:, 0]  # (B, W)
    m(z, update_w_avg=True)
    assert torch.allclose(m.w_avg, (1 - stylegan.W_AVG_BETA) * w.mean(0), atol=1e-7)
    ws = m(z, psi=0.25)
    assert torch.allclose(ws[:, 0], m.w_avg + 0.25 * (w - m.w_avg), atol=1e-6)
    assert torch.equal(ws[:, 0], ws[:, 3])  # one w broadcast to every layer


def test_demodulation_removes_the_style_scale():
    torch.manual_seed(0)
    conv = stylegan.ModulatedConv2d(4, 3, 3, w_dim=5)
    x, w = torch.randn(2, 4, 6, 6), torch.randn(2, 5)
    with torch.no_grad():
        base = conv(x, w)
        conv.affine.weight.mul_(3.0)  # every style scaled by 3 (bias too)
        conv.affine.bias.mul_(3.0)
        assert torch.allclose(conv(x, w), base, atol=1e-5)
        # each output channel then has unit-norm weights: for white-noise input, unit variance
        xn = torch.randn(2, 4, 64, 64)
        assert conv(xn, w).var((2, 3)).mean().item() == pytest.approx(1.0, abs=0.1)


def test_style_mixing_regularisation_draws_a_cutoff(bars):
    params = tiny_params("stylegan", bars)
    G = stylegan.build(params, DataSpec(channels=1, image_size=8))["G"]
    ctx = StepContext(0, params, DataSpec(channels=1, image_size=8), torch.device("cpu"), 4)
    z = torch.randn(4, 8)
    torch.manual_seed(0)
    plain = stylegan.mixed_styles(G, z, ctx, 0.0, update=False)
    assert torch.equal(plain, G.mapping(z))
    cutoffs = set()
    for _ in range(20):
        ws = stylegan.mixed_styles(G, z, ctx, 1.0, update=False)  # (B, L, W)
        own = (ws == plain).all(2).all(0)  # (L,) layers that kept z's style
        k = int(own.sum())
        assert 1 <= k < G.num_ws and own[:k].all()  # a prefix of layers, then the second z
        cutoffs.add(k)
    assert len(cutoffs) > 1


def test_upsample_filter_keeps_the_interior_constant():
    up = stylegan.upsample2d(torch.ones(1, 2, 4, 4))
    assert up.shape == (1, 2, 8, 8)
    assert torch.allclose(up[..., 1:-1, 1:-1], torch.ones(1, 2, 6, 6))


# ---------------------------------------------------------------------------- presets


@pytest.mark.parametrize("family", ZOO)
@pytest.mark.parametrize("size", ["small", "full"])
def test_presets_load_and_build(family, size):
    p = load_params(PARAMS_DIR / f"{family}-mnist5k-{size}.yaml", TrainParams)
    assert p.model.family == family
    f = FAMILIES[family]
    if family == "cyclegan":
        assert p.data.path == "data/processed/mnist5k-inverted" and p.data.split == "train"
        spec = DataSpec(1, p.data.image_size, kind="unpaired")
    else:
        spec = DataSpec(1, p.data.image_size)
    f.check(p, spec)
    nets = f.build(p, spec)
    z = torch.randn(2, p.model.latent_dim)
    if family == "cyclegan":
        z = torch.rand(2, 1, p.data.image_size, p.data.image_size) * 2 - 1
    elif family == "srgan":
        s = p.data.image_size // p.model.scale
        z = torch.rand(2, 1, s, s) * 2 - 1
    with torch.no_grad():
        out = f.generate({k: m.eval() for k, m in nets.items()}, z, None)
    assert out.shape == (2, 1, p.data.image_size, p.data.image_size)
    if size == "full":
        assert p.train.amp == "bf16"


def test_sample_cli_truncation_and_mixing(style_run, tmp_path, capsys):
    """`ganops sample --truncation/--mix-seed/--crossover` match the library calls."""
    from gan_models.cli import main

    run = str(style_run.source).rsplit("/", 1)[0]
    nets = style_run.nets
    out = tmp_path / "t.npy"
    assert main(["sample", run, "-n", "3", "--seed", "1", "--truncation", "0", "-o", str(out)]) == 0
    want = stylegan.generate(nets, sample_latents(3, 8, seed=1), psi=0.0)
    assert torch.allclose(torch.from_numpy(np.load(out)), want.clamp(-1, 1), atol=1e-6)
    argv = ["sample", run, "-n", "3", "--seed", "1", "--mix-seed", "2", "--crossover", "0"]
    assert main([*argv, "-o", str(out)]) == 0  # crossover 0: all of the second seed's styles
    want = stylegan.generate(nets, sample_latents(3, 8, seed=2))
    assert torch.allclose(torch.from_numpy(np.load(out)), want.clamp(-1, 1), atol=1e-6)
    assert main(["sample", run, "--crossover", "1", "-o", str(out)]) == 2
    assert "--crossover needs --mix-seed" in capsys.readouterr().err
