"""Deterministic CPU stages give the same bits whatever thread count the process starts with.

PyTorch's CPU kernels split their sums by the number of intra-op threads, so without pinning the
same seed trains other weights on 1 thread than on 2 (the controls below show it on these very
runs); deterministic training and the domain classifier pin the count
(``gan_models.utils.determinism``) and record it.
"""

import json

import numpy as np
import pytest
import torch

from gan_models.data.format import ImageSet, write_imageset
from gan_models.metrics.domain_classifier import fit_classifier, train_domain_classifier
from gan_models.training import train
from gan_models.training.params import TrainParams
from gan_models.utils.determinism import DETERMINISTIC_THREADS, lineage, pinned_threads


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """64 labelled 8x8 grey images of three classes of noisy bars, on disk."""
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 3
    images = rng.integers(0, 120, (64, 1, 8, 8)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, 0, :, 2 * y : 2 * y + 3] = 230
    path = tmp_path_factory.mktemp("data") / "bars"
    write_imageset(path, {"images": images}, labels=labels, meta={"name": "bars", "source": "test"})
    return path, images, labels


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _train(
    data_path, run_dir, threads: int, deterministic: bool, split: str | None = None
) -> dict[str, torch.Tensor]:
    torch.set_num_threads(threads)  # what OMP_NUM_THREADS or the host's core count would give
    p = TrainParams(
        model={"family": "dcgan", "width": 8, "latent_dim": 8},
        data={"path": str(data_path), "image_size": 8, "split": split},
        train={
            "steps": 2,
            "batch_size": 16,
            "checkpoint_every": 2,
            "progress": False,
            "device": "cpu",
            "deterministic": deterministic,
        },
    )
    train(p, run_dir)
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    state = torch.load(run_dir / "checkpoints" / "step_00000002.pt", weights_only=False)
    return {f"{n}.{k}": v for n, net in state["nets"].items() for k, v in net.items()}


def test_deterministic_training_is_independent_of_the_thread_count(
    digits, tmp_path, restore_threads
):
    path = digits[0]
    one = _train(path, tmp_path / "t1", 1, deterministic=True)
    two = _train(path, tmp_path / "t2", 2, deterministic=True)
    assert one.keys() == two.keys()
    assert all(torch.equal(one[k], two[k]) for k in one), "weights differ with the thread count"
    run = json.loads((tmp_path / "t1" / "run.json").read_text())
    assert run["determinism"]["intra_op_threads"] == DETERMINISTIC_THREADS
    # control: unpinned (deterministic off), the same two runs part at once
    free1 = _train(path, tmp_path / "f1", 1, deterministic=False)
    free2 = _train(path, tmp_path / "f2", 2, deterministic=False)
    assert any(not torch.equal(free1[k], free2[k]) for k in free1)


def test_domain_classifier_is_independent_of_the_thread_count(digits, tmp_path, restore_threads):
    _, raw, labels = digits
    images = raw.astype(np.float32) / 127.5 - 1  # (64, 1, 8, 8) in [-1, 1], as processed
    data = ImageSet(arrays={"images": images}, labels=labels, meta={"name": "bars"})
    files = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out = tmp_path / f"t{threads}"
        card = train_domain_classifier(data, data, out, epochs=1, batch_size=16, width=4, hidden=8)
        assert card["training"]["determinism"]["intra_op_threads"] == DETERMINISTIC_THREADS
        assert torch.get_num_threads() == threads
        files.append({f.name: f.read_bytes() for f in out.iterdir()})
    assert files[0] == files[1]  # weights and card, byte for byte
    # control: the same fit without the pinning parts with the thread count
    fits = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        model = fit_classifier(
            images, labels, num_classes=3, epochs=1, batch_size=16, width=4, hidden=8
        )
        fits.append(model.state_dict())
    assert any(not torch.equal(fits[0][k], fits[1][k]) for k in fits[0])


def test_pinned_threads_restores_and_lineage_names_the_kernels(restore_threads):
    torch.set_num_threads(1)
    with pinned_threads() as n:
        assert n == torch.get_num_threads() == DETERMINISTIC_THREADS
        assert lineage()["intra_op_threads"] == DETERMINISTIC_THREADS
    assert torch.get_num_threads() == 1
    with pinned_threads(enabled=False) as n:
        assert n == 1
    info = lineage()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch"] == torch.__version__


def test_evaluation_is_independent_of_the_thread_count(
    digits, tmp_path, restore_threads, monkeypatch
):
    from gan_models.evaluation import evaluate_run
    from gan_models.metrics.config import EvaluateParams, FeaturesParams
    from gan_models.metrics.extractors import train_features

    _, raw, labels = digits
    root = tmp_path / "processed" / "bars"
    for split, rows in (("train", slice(0, 48)), ("test", slice(48, 64))):
        write_imageset(root / split, {"images": raw[rows]}, labels=labels[rows], meta={"name": "b"})
    monkeypatch.setenv("GANOPS_CACHE_DIR", str(tmp_path / "cache"))
    features = FeaturesParams(domain={"epochs": 1, "batch_size": 16, "width": 4, "hidden": 8})
    train_features(root, features, tmp_path / "features")
    _train(root, tmp_path / "run", 1, deterministic=True, split="train")
    ev = EvaluateParams(n_samples=64, fid_bootstrap=5, kid_subsets=3, memorization_samples=5)
    kw = {"features": features, "evaluate": ev, "features_dir": tmp_path / "features"}

    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        results.append(evaluate_run(tmp_path / "run", **kw))
        assert torch.get_num_threads() == threads
    assert results[0]["summary"] == results[1]["summary"]
    assert results[0]["lineage"]["determinism"]["intra_op_threads"] == DETERMINISTIC_THREADS
    # Images this small do not show the thread count in the metrics unpinned; mnist5k's
    # evaluation does (docs/reproducibility.md): this checks that pinning keeps them equal.
