"""Classification Accuracy Score (Ravuri & Vinyals 2019) for class-conditional generators.

A classifier (the domain classifier's small CNN, same training recipe) is trained on generated
images with the labels they were generated for, then tested on the real test split. A generator
whose samples carry their class well scores close to a classifier trained on real data; mode
dropping and label mix-ups pull the score down where FID may not notice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gan_models.errors import DataError
from gan_models.metrics.domain_classifier import classifier_accuracy, fit_classifier
from gan_models.metrics.images import ArrayLike
from gan_models.metrics.registry import EvalContext, Metric, Need, fmt, register_metric


def classification_accuracy_score(
    images: ArrayLike,
    labels: ArrayLike,
    test_images: ArrayLike,
    test_labels: ArrayLike | None,
    *,
    num_classes: int | None = None,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train on generated (images (N, C, H, W) in [-1, 1], labels (N,)), test on real data.

    Returns ``{"accuracy", "n_train", "n_test", "num_classes", "epochs", "seed"}``.
    """
    if test_labels is None:
        raise DataError("CAS needs a labelled real test split, and this one has no labels")
    y = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    y_test = np.asarray(test_labels)
    k = num_classes if num_classes is not None else int(max(y.max(), y_test.max())) + 1
    model = fit_classifier(
        images,
        y,
        num_classes=k,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
    )
    return {
        "accuracy": classifier_accuracy(model, test_images, y_test),
        "n_train": int(len(y)),
        "n_test": int(len(y_test)),
        "num_classes": k,
        "epochs": epochs,
        "seed": seed,
    }


# ---------------------------------------------------------------- registered metric


def evaluate_cas(ctx: EvalContext) -> dict[str, Any] | None:
    """A classifier trained on the generated (image, label) pairs, tested on the real test split;
    None when the evaluation turns CAS off (``cas: false``)."""
    if not ctx.options.get("cas", True):
        return None
    test = ctx.real_test
    cas = classification_accuracy_score(
        ctx.images,
        ctx.labels,
        test.images,
        test.labels,
        num_classes=test.num_classes or ctx.extractor.num_classes,
        epochs=ctx.options["cas_epochs"],
        seed=ctx.seed,
        device=str(ctx.extractor.device),
    )
    lineage = ctx.lineage(int(test.images.shape[0]), ctx.n_samples)
    return {
        **cas,
        "real_data_accuracy": getattr(ctx.extractor, "test_accuracy", None),
        "lineage": {**lineage, "test_split": ctx.test_split},
    }


def cas_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    if r.get("accuracy") is None:
        return []
    return [
        ("CAS", fmt(r["accuracy"]), f"real-data classifier: {fmt(r.get('real_data_accuracy'))}")
    ]


CAS = register_metric(
    Metric(
        "cas",
        evaluate_cas,
        needs={Need.IMAGES, Need.LABELS, Need.REAL_TEST},
        summary=lambda r: {"cas": r["accuracy"]},
        rows=cas_rows,
        function=classification_accuracy_score,
        description="classification accuracy score of conditional generators",
    )
)
