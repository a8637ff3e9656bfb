"""The downstream classifier: a standard small CNN, separate from the domain classifier that
serves FID (its own architecture, params and training), trained for the same number of steps in
every arm so that arms differ only in their data.

Two 3x3 conv + ReLU + 2x2 max-pool stages (``width`` and 2 x ``width`` channels), a hidden
dense layer with dropout, a linear head; AdamW with cosine decay. Seeded: the same data and
seed give the same weights on CPU, and every arm of a seed starts from the same weights and
draws its batches from the same generator.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gan_models.augment.classical import augment_batch
from gan_models.augment.config import ClassicalParams, ClassifierParams
from gan_models.errors import DataError


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, size: int, num_classes: int, p: ClassifierParams):
        super().__init__()
        c = p.width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(2 * c * (size // 4) ** 2, p.hidden),
            nn.ReLU(),
            nn.Dropout(p.dropout),
            nn.Linear(p.hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (B, C, S, S) -> (B, K)


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    p: ClassifierParams,
    seed: int,
    classical: ClassicalParams | None = None,
) -> SmallCNN:
    """Train on images (N, C, S, S) in [-1, 1] with labels (N,); ``classical`` augments batches."""
    if images.shape[0] == 0:
        raise DataError("the classifier's training set is empty")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images.shape[0]} training images but {labels.shape[0]} labels")
    _, ch, h, w = images.shape
    if h != w or h < 4:
        raise DataError(f"the classifier takes square images of at least 4x4, got {h}x{w}")
    torch.manual_seed(seed)
    model = SmallCNN(ch, h, num_classes, p)
    gen = torch.Generator().manual_seed(seed)  # batch order and augmentation
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.steps)
    n = images.shape[0]
    order, pos = torch.randperm(n, generator=gen), 0
    model.train()
    for _ in range(p.steps):
        if pos + p.batch_size > n and pos > 0:  # a new epoch: a fresh permutation
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + p.batch_size]
        pos += p.batch_size
        xb = images[idx]
        if classical is not None:
            xb = augment_batch(xb, classical, gen)
        loss = F.cross_entropy(model(xb), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.inference_mode()
def accuracy(model: SmallCNN, images, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy on images (N, C, S, S) in [-1, 1] (a tensor or a split read in chunks)."""
    correct = 0
    n = int(labels.shape[0])
    for start in range(0, n, batch_size):
        xb = torch.as_tensor(images[start : start + batch_size])
        correct += int((model(xb).argmax(1) == labels[start : start + batch_size]).sum())
    return correct / n
