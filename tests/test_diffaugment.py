"""DiffAugment (train.augment): each op against its closed form, gradients through the ops, the
same augmentation on real and fake images in real training steps, bit-exact resume, and the
option's errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_models.data.format import write_imageset
from gan_models.families import FAMILIES
from gan_models.families.base import DataSpec, StepContext
from gan_models.families.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_models.losses import g_loss
from gan_models.training import StepInfo, train
from gan_models.training.diffaugment import (
    POLICIES,
    Augment,
    augment_critics,
    brightness,
    contrast,
    cutout,
    diff_augment,
    saturation,
    translate_by,
    translation,
)
from gan_models.training.params import TrainParams

GANOPS = Path(sys.executable).parent / "ganops"
ALL = ["color", "translation", "cutout"]
CONSTANT = 200 / 127.5 - 1  # the stored uint8 200 in [-1, 1]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b=6, c=3, h=8, w=8, seed=0) -> torch.Tensor:
    """Random images with no exact zeros, so zeros in an output come from the augmentation."""
    x = torch.rand(b, c, h, w, generator=gen(seed)) * 1.8 - 0.9
    return torch.where(x.abs() < 1e-3, torch.full_like(x, 0.5), x)  # (B, C, H, W)


# ------------------------------------------------------------------------------ the ops


def test_brightness_adds_one_constant_per_image():
    x = images()
    d = brightness(x, gen()) - x  # (B, C, H, W)
    per_image = d.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-6)
    u = torch.rand(x.shape[0], 1, 1, 1, generator=gen())  # the same draw
    assert torch.allclose(d[:, :1, :1, :1], u - 0.5, atol=1e-6)
    assert per_image[:, 0].abs().max() <= 0.5


def test_saturation_scales_the_deviation_from_the_channel_mean():
    x = images()
    y = saturation(x, gen())
    mean = x.mean(1, keepdim=True)  # (B, 1, H, W)
    assert torch.allclose(y.mean(1, keepdim=True), mean, atol=1e-6)
    factor = 2 * torch.rand(x.shape[0], 1, 1, 1, generator=gen())
    assert torch.allclose(y, (x - mean) * factor + mean, atol=1e-6)
    grey = images(c=1)
    assert torch.allclose(saturation(grey, gen()), grey)  # one channel: nothing to saturate


def test_contrast_scales_the_deviation_from_the_image_mean():
    x = images()
    y = contrast(x, gen())
    mean = x.mean((1, 2, 3), keepdim=True)
    assert torch.allclose(y.mean((1, 2, 3), keepdim=True), mean, atol=1e-6)
    factor = torch.rand(x.shape[0], 1, 1, 1, generator=gen()) + 0.5
    assert torch.allclose(y, (x - mean) * factor + mean, atol=1e-6)


def test_translate_by_shifts_and_pads_with_zeros():
    x = images(b=3, h=8, w=6)
    dy, dx = torch.tensor([1, -2, 0]), torch.tensor([-1, 0, 3])
    y = translate_by(x, dy, dx)
    for b in range(3):
        expected = torch.zeros_like(x[b])
        sy, sx = int(dy[b]), int(dx[b])
        src = x[b][:, max(0, -sy) : 8 - max(0, sy), max(0, -sx) : 6 - max(0, sx)]
        expected[:, max(0, sy) : 8 - max(0, -sy), max(0, sx) : 6 - max(0, -sx)] = src
        assert torch.equal(y[b], expected)


def test_translation_shifts_by_at_most_an_eighth():
    x = images(b=32, h=16, w=16)
    y = translation(x, gen(3))
    shifts = set()
    for b in range(32):  # each image is x shifted by one (dy, dx) in [-2, 2]^2
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(
                y[b : b + 1], translate_by(x[b : b + 1], torch.tensor([dy]), torch.tensor([dx]))
            )
        ]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 5  # the shifts are drawn, not fixed


@pytest.mark.parametrize("size", [8, 7])
def test_cutout_zeroes_a_square_of_half_the_side(size):
    x = torch.ones(256, 3, size, size)
    y = cutout(x, gen(1))
    side = int(size * 0.5 + 0.5)
    full = 0
    for b in range(256):
        zero = y[b] == 0  # (C, H, W)
        assert torch.equal(zero, zero[:1].expand_as(zero))  # the same pixels in every channel
        rows, cols = zero[0].any(1).nonzero().flatten(), zero[0].any(0).nonzero().flatten()
        assert len(rows) and len(cols)
        # one rectangle: its rows x its columns, contiguous, at most the square's side
        assert int(zero[0].sum()) == len(rows) * len(cols)
        assert rows.tolist() == list(range(rows[0], rows[-1] + 1))
        assert cols.tolist() == list(range(cols[0], cols[-1] + 1))
        assert len(rows) <= side and len(cols) <= side
        # a smaller side is the square clipped at the border
        assert len(rows) == side or rows[0] == 0 or rows[-1] == size - 1
        assert len(cols) == side or cols[0] == 0 or cols[-1] == size - 1
        full += len(rows) == side and len(cols) == side
        assert torch.equal(y[b][~zero], x[b][~zero])
    assert full > 256 / 8  # unclipped: about a quarter of them


def test_empty_policy_and_p_zero_are_the_identity():
    x = images()
    g = gen()
    state = g.get_state()
    assert diff_augment(x, [], g) is x
    assert torch.equal(g.get_state(), state)  # nothing drawn
    for ops in POLICIES.values():
        for op in ops:
            assert torch.equal(op(x, gen(), 0.0), x)


def test_p_applies_each_op_to_that_share_of_the_images():
    x = torch.ones(2000, 1, 8, 8)
    y = cutout(x, gen(), 0.3)
    share = (y == 0).flatten(1).any(1).float().mean().item()
    assert 0.25 < share < 0.35


def test_gradients_through_the_ops_match_finite_differences():
    x = images(b=2, c=3, h=8, w=8).double().requires_grad_(True)
    # the same draws on every call: gradcheck evaluates the function many times
    assert torch.autograd.gradcheck(lambda t: diff_augment(t, ALL, gen(5)), (x,))
    assert torch.autograd.gradcheck(lambda t: diff_augment(t, ALL, gen(5), 0.5), (x,))


# ------------------------------------------------------------------- in the families' phases


def _dcgan(policy):
    params = TrainParams(
        model={"family": "dcgan", "width": 8, "latent_dim": 8},
        train={"batch_size": 8, "augment": policy},
    )
    spec = DataSpec(channels=3, image_size=8)
    family = FAMILIES["dcgan"]
    torch.manual_seed(0)
    nets = family.build(params, spec)
    phases = {p.name: p for p in family.phases(params, spec)}
    ctx = StepContext(0, params, spec, torch.device("cpu"), 8)
    return params, nets, phases, ctx


def test_the_generator_gets_its_gradient_through_the_augmentation():
    params, nets, phases, ctx = _dcgan(ALL)
    augment = Augment(ALL, 1.0, seed=0, device=torch.device("cpu"))
    torch.manual_seed(1)
    augment.reseed(7)
    phases["G"].loss(augment_critics(nets, ["D"], augment), None, ctx)["loss"].backward()
    grads = [p.grad.clone() for p in nets["G"].parameters()]
    assert all(g.abs().sum() > 0 for g in grads)

    # by hand: the same latents and draws, the ops applied explicitly
    nets["G"].zero_grad()
    torch.manual_seed(1)
    fake = nets["G"](torch.randn(8, 8), None)  # (B, C, H, W)
    twin = Augment(ALL, 1.0, seed=0, device=torch.device("cpu"))
    twin.reseed(7)
    logits = nets["D"](diff_augment(fake, ALL, twin.generator), None)
    g_loss("nonsaturating", logits).backward()
    for a, p in zip(grads, nets["G"].parameters(), strict=True):
        assert torch.equal(a, p.grad)


def test_no_gradient_reaches_the_cut_pixels():
    _, nets, _, _ = _dcgan(["cutout"])
    fake = torch.randn(8, 3, 8, 8, requires_grad=True)
    g = gen(2)
    nets["D"](cutout(fake, g), None).sum().backward()
    keep = cutout(torch.ones(8, 3, 8, 8), gen(2)) != 0  # the same squares
    assert (fake.grad[~keep] == 0).all()
    assert (fake.grad[keep] != 0).float().mean() > 0.9


# ------------------------------------------------------------------------- in real training


@pytest.fixture(scope="module")
def constant_data(tmp_path_factory):
    """32 colour 8x8 images, every pixel 200: what D sees of them shows what was done to them."""
    path = tmp_path_factory.mktemp("data") / "constant"
    images = np.full((32, 3, 8, 8), 200, np.uint8)
    write_imageset(path, {"images": images}, labels=np.arange(32) % 2, meta={"name": "constant"})
    return path


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    """48 labelled 8x8 colour images of noisy bars, and an unpaired pair of them."""
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 3
    images = rng.integers(0, 60, (48, 3, 8, 8)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, :, :, 2 * y : 2 * y + 3] = 230
    root = tmp_path_factory.mktemp("data")
    write_imageset(root / "bars", {"images": images}, labels=labels, meta={"name": "bars"})
    write_imageset(
        root / "pair",
        {"a": images[:24], "b": 255 - images[24:]},
        meta={"name": "pair"},
        kind="unpaired",
    )
    return root


def tiny(family, data_path, loss=None, **train) -> TrainParams:
    t = {"steps": 2, "batch_size": 8, "checkpoint_every": 1, "log_every": 1, "progress": False}
    t.update(train)
    m = {"width": 8, "latent_dim": 8, "embed_dim": 4, "res_blocks": 1, "mapping_layers": 2}
    m = {"family": family, **{k: v for k, v in m.items() if f"model.{k}" in FAMILIES[family].reads}}
    if family == "srgan":
        m["scale"] = 2
    return TrainParams(
        model=m, data={"path": str(data_path), "image_size": 8}, loss=loss or {}, train=t
    )


def test_the_same_augmentation_reaches_real_and_fake(constant_data, tmp_path):
    """Record what D and G compute in a real run: D's inputs are the real batch and G's outputs,
    each through the policy with the trainer's draws for that step, in the phases' order."""
    seen, made = [], []

    def d_input(module, args):
        if isinstance(module, DCGANDiscriminator):
            seen.append(args[0].detach().clone())

    def g_output(module, args, out):
        if isinstance(module, DCGANGenerator) and out.shape[0] == 8:  # not the sample grid
            made.append(out.detach().clone())

    hooks = [
        torch.nn.modules.module.register_module_forward_pre_hook(d_input),
        torch.nn.modules.module.register_module_forward_hook(g_output),
    ]
    try:
        train(tiny("dcgan", constant_data, steps=2, augment=ALL, seed=3), tmp_path / "run")
    finally:
        for h in hooks:
            h.remove()
    # per step: D phase D(real), D(fake); G phase D(fake); G ran once per phase
    assert len(seen) == 6 and len(made) == 4
    real = torch.full((8, 3, 8, 8), CONSTANT)
    for step in range(2):
        augment = Augment(ALL, 1.0, seed=3, device=torch.device("cpu"))
        augment.reseed(step)
        d_real, d_fake, g_fake = seen[3 * step : 3 * step + 3]
        assert torch.equal(d_real, augment(real))
        assert torch.equal(d_fake, augment(made[2 * step]))
        assert torch.equal(g_fake, augment(made[2 * step + 1]))
        for x in (d_real, d_fake, g_fake):  # each image has its cut square
            assert ((x == 0).flatten(1).sum(1) >= 4 * 3).all()
        assert not torch.equal(d_real, real)


@pytest.mark.parametrize(
    "family", ["vanilla", "dcgan", "cgan", "wgan", "wgan-gp", "stylegan", "srgan", "cyclegan"]
)
def test_every_family_trains_with_augmentation(family, bars, tmp_path):
    data = bars / ("pair" if family == "cyclegan" else "bars")
    loss = {"r1_gamma": 0.1, "r1_every": 1} if family in ("dcgan", "stylegan") else {}
    on = train(tiny(family, data, loss, augment=ALL), tmp_path / "on")
    off = train(tiny(family, data, loss), tmp_path / "off")
    assert all(np.isfinite(v) for v in on.final_losses.values())
    assert on.final_losses["D/loss"] != off.final_losses["D/loss"]  # D saw other images
    assert (tmp_path / "on" / "config.yaml").read_text().count("augment") == 2
    assert "augment" not in (tmp_path / "off" / "config.yaml").read_text()


@pytest.mark.parametrize("family", ["dcgan", "wgan-gp"])
def test_resume_with_augmentation_is_bit_exact(family, bars, tmp_path):
    """Crash after step 3 (checkpoint at 2), resume: the same weights as an uninterrupted run;
    dcgan runs its lazy R1 and wgan-gp its gradient penalty through the augmentation."""
    loss = {"r1_gamma": 0.1, "r1_every": 2} if family == "dcgan" else {}
    params = tiny(
        family, bars / "bars", loss, steps=5, checkpoint_every=2, augment=ALL, augment_p=0.7
    )
    train(params, tmp_path / "a")

    def crash_at_3(info: StepInfo) -> None:
        if info.step == 3:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(params, tmp_path / "b", callbacks=[crash_at_3])
    assert train(params, tmp_path / "b", resume=True).resumed_from == 2
    a, b = (
        torch.load(p / "checkpoints/step_00000005.pt", weights_only=False)
        for p in (tmp_path / "a", tmp_path / "b")
    )
    for table in ("nets", "ema"):
        for net in a[table]:
            for k, v in a[table][net].items():
                assert torch.equal(v, b[table][net][k]), f"{table}.{net}.{k}"
    stats = [(p / "stats.jsonl").read_text().splitlines() for p in (tmp_path / "a", tmp_path / "b")]
    strip = lambda line: {k: v for k, v in __import__("json").loads(line).items() if "/" in k}  # noqa: E731
    assert [strip(x) for x in stats[0]] == [strip(x) for x in stats[1]]


# ------------------------------------------------------------------------------ the option


@pytest.mark.parametrize(
    "value, message",
    [
        (
            "colour",
            "train.augment.0: Input should be 'color', 'translation' or 'cutout' (got 'colour')",
        ),
        ("color,cutout,color", "train.augment: an op is listed twice"),
    ],
)
def test_a_bad_policy_is_one_line_and_exit_2(value, message, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("model: {family: dcgan}\n")
    proc = subprocess.run(
        [str(GANOPS), "train", str(params), "--set", f"train.augment={value}", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_policy_as_a_string_or_a_list_and_p_needs_a_policy():
    from gan_models.config import validate_model
    from gan_models.errors import ConfigError

    a = validate_model(TrainParams, {"train": {"augment": "color, cutout"}}, "p.yaml")
    b = validate_model(TrainParams, {"train": {"augment": ["color", "cutout"]}}, "p.yaml")
    assert a.train.augment == b.train.augment == ["color", "cutout"]
    assert (
        validate_model(TrainParams, {"train": {"augment": ""}}, "p.yaml").to_dict()
        == TrainParams().to_dict()
    )
    with pytest.raises(
        ConfigError, match="train.augment_p: would be ignored with train.augment off"
    ):
        validate_model(TrainParams, {"train": {"augment_p": 0.5}}, "p.yaml")


def test_off_leaves_the_resolved_config_as_it_was():
    assert not {"augment", "augment_p"} & set(TrainParams().to_dict()["train"])


def test_families_lists_the_option(capsys):
    from gan_models.cli import main

    params = Path(__file__).resolve().parents[1] / "params"
    assert main(["families", "--params-dir", str(params)]) == 0
    out = capsys.readouterr().out
    assert "every family: train.augment = []: DiffAugment" in out
    assert "every family: train.augment_p = 1.0" in out
