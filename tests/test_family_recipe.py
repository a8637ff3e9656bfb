"""Adding a GAN family is one file: a family defined here, registered through the public API,
trains, samples, evaluates and registers with no other change (docs/architecture.md, "Add a
family"), and its own options are refused in another family's params, naming both."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bars import write_processed_bars
from pydantic import Field
from torch import nn

from gan_models.cli import main
from gan_models.config import load_params
from gan_models.errors import ConfigError
from gan_models.evaluation import evaluate_run
from gan_models.families import FAMILIES, Family, FamilyOptions, Phase, register_family
from gan_models.metrics.config import EvaluateParams, FeaturesParams
from gan_models.metrics.extractors import train_features
from gan_models.sampling import RunGenerator
from gan_models.tracking.model import load_registered_generator
from gan_models.tracking.registry import register_run
from gan_models.training import train
from gan_models.training.params import TrainParams

# ----------------------------------------------------------------------------- the family


class TinyModel(FamilyOptions):
    """The tiny family's own ``model`` keys."""

    hidden: int = Field(16, ge=1, description="hidden units of both MLPs")


class TinyLoss(FamilyOptions):
    """The tiny family's own ``loss`` keys."""

    smoothing: float = Field(0.1, ge=0, lt=1, description="one-sided label smoothing of D")


def build(params, spec):
    shape = (spec.channels, spec.image_size, spec.image_size)
    n, h = int(np.prod(shape)), params.model.hidden
    return {
        "G": nn.Sequential(
            nn.Linear(params.model.latent_dim, h),
            nn.ReLU(),
            nn.Linear(h, n),
            nn.Tanh(),
            nn.Unflatten(1, shape),
        ),  # fmt: skip
        "D": nn.Sequential(nn.Flatten(), nn.Linear(n, h), nn.LeakyReLU(0.2), nn.Linear(h, 1)),
    }


def phases(params, spec):
    smooth = params.loss.smoothing

    def d_main(nets, batch, ctx):
        real = batch["image"]  # (B, C, H, W)
        fake = nets["G"](ctx.latents(real.shape[0])).detach()
        r, f = nets["D"](real), nets["D"](fake)  # (B, 1)
        loss = F.binary_cross_entropy_with_logits(r, torch.full_like(r, 1 - smooth))
        loss = loss + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
        return {"loss": loss}

    def g_main(nets, batch, ctx):
        f = nets["D"](nets["G"](ctx.latents(ctx.batch_size)))
        return {"loss": F.binary_cross_entropy_with_logits(f, torch.ones_like(f))}

    return [Phase("D", "D", d_main), Phase("G", "G", g_main, needs_batch=False)]


TINY = Family(
    name="tiny-mlp",
    description="a two-layer MLP GAN with label smoothing (defined in a test)",
    paper="Goodfellow et al. 2014; Salimans et al. 2016 (one-sided label smoothing)",
    build=build,
    phases=phases,
    generate=lambda nets, z, labels: nets["G"](z),
    reads=frozenset({"model.latent_dim"}),
    options={"model": TinyModel, "loss": TinyLoss},
)


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_family(TINY)
    yield TINY
    FAMILIES.pop(TINY.name)


# ----------------------------------------------------------------------------- data


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANOPS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """Three classes of 8x8 bars in [-1, 1], train/val/test splits."""
    root = tmp_path_factory.mktemp("processed") / "bars"
    return write_processed_bars(root)


def params_file(
    tmp_path, processed, family="tiny-mlp", model="  hidden: 12\n", loss="  smoothing: 0.2\n"
):
    path = tmp_path / f"{family}.yaml"
    path.write_text(
        f"data:\n  path: {processed}\n  split: train\n  image_size: 8\n"
        f"model:\n  family: {family}\n  latent_dim: 8\n{model}"
        f"loss:\n{loss or '  {}'}\n"
        "train:\n  steps: 200\n  batch_size: 16\n  lr: 0.002\n  log_every: 20\n"
        "  checkpoint_every: 200\n  ema_decay: null\n  progress: false\n"
    )
    return path


# ----------------------------------------------------------------------------- the recipe


def test_a_family_defined_in_one_file_runs_through_every_stage(tmp_path, processed):
    params = load_params(params_file(tmp_path, processed), TrainParams)
    assert (params.model.hidden, params.loss.smoothing) == (12, 0.2)  # its own options, typed

    run = tmp_path / "run"
    result = train(params, run)
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert result.steps == 200 and all(np.isfinite(r["G/loss"]) for r in stats)
    assert "hidden: 12" in (run / "config.yaml").read_text()  # the resolved config shows them

    gen = RunGenerator.from_run_dir(run)
    images, _ = gen.generate(6, seed=3)
    assert images.shape == (6, 1, 8, 8) and torch.equal(images, gen.generate(6, seed=3)[0])

    features = tmp_path / "features"
    train_features(
        processed, FeaturesParams(domain={"epochs": 5, "batch_size": 16, "width": 8}), features
    )
    ev = EvaluateParams(n_samples=30, fid_bootstrap=10, kid_subsets=5, memorization_samples=10)
    evaluate_run(run, features=FeaturesParams(), evaluate=ev, features_dir=features)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["family"] == "tiny-mlp"
    assert 0 < metrics["fid"]["value"] < metrics["fid"]["untrained"]  # it learned

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    version = register_run(run, tracking_uri=uri)
    assert version.name == "tiny-mlp-bars"
    loaded = load_registered_generator("models:/tiny-mlp-bars@challenger", tracking_uri=uri)
    assert torch.equal(loaded.generate(6, seed=3)[0], images)


def test_its_options_are_refused_in_another_familys_params(tmp_path, processed):
    for bad, key in (("  hidden: 12\n", "model.hidden"), ("  width: 8\n", None)):
        path = params_file(tmp_path, processed, family="dcgan", model=bad, loss="")
        if key is None:  # a shared key dcgan reads is fine
            load_params(path, TrainParams)
            continue
        with pytest.raises(ConfigError, match=rf"{key}: the dcgan family does not read") as e:
            load_params(path, TrainParams)
        assert "tiny-mlp" in str(e.value)
    path = params_file(tmp_path, processed, model="", loss="  smoothing: 1.5\n")
    with pytest.raises(ConfigError, match=r"loss.smoothing: Input should be less than 1"):
        load_params(path, TrainParams)
    path = params_file(tmp_path, processed, model="  width: 32\n", loss="")
    with pytest.raises(ConfigError, match=r"model.width: the tiny-mlp family does not read"):
        load_params(path, TrainParams)


def test_ganops_families_lists_it_with_its_options(capsys):
    assert main(["families"]) == 0
    out = capsys.readouterr().out
    assert "tiny-mlp" in out
    assert "option: model.hidden = 16: hidden units of both MLPs" in out
    assert "option: loss.smoothing = 0.1: one-sided label smoothing of D" in out


OLD_RESOLVED = """\
name: old
data: {path: data/raw/mnist5k, split: null, image_size: 32}
model: {family: srgan, latent_dim: 64, width: 16, depth: 3, spectral_norm: false, d_norm: null,
  embed_dim: 16, res_blocks: null, scale: 2, mapping_layers: 8}
loss: {type: null, n_critic: null, gp_weight: 10.0, clip: 0.01, r1_gamma: 0.0, r1_every: 16,
  cycle_weight: 10.0, identity_weight: 0.5, pool_size: 50, content: ssim, content_weight: 1.0,
  content_network: null, adv_weight: null, style_mixing: 0.9}
"""


def test_a_run_folder_from_before_family_options_still_loads(tmp_path):
    """Its config.yaml holds every family's keys at their defaults: a params file like that is
    refused, a run folder's resolved config loads with the same values."""
    from gan_models.training.params import load_run_config

    path = tmp_path / "config.yaml"
    path.write_text(OLD_RESOLVED)
    with pytest.raises(ConfigError, match="model.depth: the srgan family does not read"):
        load_params(path, TrainParams)
    p = load_run_config(path)
    assert (p.model.scale, p.model.res_blocks, p.loss.content, p.loss.adv_weight) == (
        2,
        16,
        "ssim",
        1e-3,
    )
    assert "depth" not in p.to_dict()["model"] and "gp_weight" not in p.to_dict()["loss"]
