"""The linear probe: multinomial logistic regression on frozen, standardised features.

Why: how much of the class information a backbone's features hold in linearly readable form is
the standard measure of learned representations (the linear evaluation protocol of
self-supervised learning). Features are computed once and cached, so the regression trains on a
matrix, not on images: a few seconds even for 50,000 images.

Choices, fixed so that probes of different runs compare: features standardised with the mean
and std of the training features; weights start at zero (the problem is convex, so the start
only sets the path, and zero needs no random numbers); mini-batch AdamW with a cosine learning
rate for a fixed number of epochs, a small weight decay on the weights (not the bias), and a
seeded batch order. Same features and seed, same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LinearFit:
    """What the probe reports: accuracy on the test and on the training features."""

    test_acc: float
    train_acc: float


def standardise(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``train`` and ``others`` scaled by the training features' per-dimension mean and std
    (a constant dimension is centred and left unscaled)."""
    mean = train.mean(0)
    std = train.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return tuple((x - mean) / std for x in (train, *others))


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    epochs: int = 100,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
) -> LinearFit:
    """Fit a linear classifier on the training features; its accuracy on both splits."""
    device = train_features.device
    x, x_test = standardise(train_features.float(), test_features.float().to(device))
    y, y_test = train_labels.long().to(device), test_labels.long().to(device)
    num_classes = int(max(y.max(), y_test.max() if len(y_test) else 0)) + 1
    weight = torch.zeros(num_classes, x.shape[1], device=device, requires_grad=True)
    bias = torch.zeros(num_classes, device=device, requires_grad=True)
    _fit(weight, bias, x, y, epochs, lr, weight_decay, batch_size, seed)
    return LinearFit(_accuracy(weight, bias, x_test, y_test), _accuracy(weight, bias, x, y))


def _fit(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
) -> None:
    """Mini-batch AdamW on the cross-entropy, cosine learning rate over every step."""
    optimizer = torch.optim.AdamW(
        [{"params": [weight], "weight_decay": weight_decay}, {"params": [bias], "weight_decay": 0}],
        lr=lr,
    )
    steps_per_epoch = math.ceil(len(x) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(x[index] @ weight.T + bias, y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def _accuracy(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    if not len(x):
        return float("nan")
    with torch.no_grad():
        return float(((x @ weight.T + bias).argmax(1) == y).float().mean())
