"""Weighted k-NN classification of frozen features: the probe that fits nothing.

Why: a k-NN vote over cosine similarities measures how well a backbone's features put images of
one class together, with no optimiser, no hyperparameter search and no randomness. The vote
follows instance discrimination (Wu et al. 2018) as solo-learn uses it: the ``k`` most similar
bank features vote for their labels with weights ``exp(sim / T)``; ``k=20``, ``T=0.07``.

One core, :func:`knn_predict`, serves the probe (a bank of training features, test queries) and
the pretext tasks' leave-one-out monitor (the evaluated features are bank and queries at once,
``exclude_self=True``). Similarities are computed in row blocks of about
:data:`BLOCK_ELEMENTS` entries, so 10,000 queries against 50,000 features never hold the whole
10,000 x 50,000 matrix.
"""

from __future__ import annotations

import torch
from torch import nn

K = 20
TEMPERATURE = 0.07
BLOCK_ELEMENTS = 2**24  # similarities held at once: 64 MiB of float32


def knn_predict(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    k: int = K,
    temperature: float = TEMPERATURE,
    exclude_self: bool = False,
) -> torch.Tensor:
    """The predicted label (Q,) of each query (Q, D) by a weighted vote of its ``k`` most
    cosine-similar rows of ``bank`` (N, D) labelled ``bank_labels`` (N,).

    ``exclude_self``: the queries are the bank itself, row for row (leave-one-out); no query
    votes for itself. ``k`` larger than the bank uses the whole bank.
    """
    if exclude_self and len(queries) != len(bank):
        raise ValueError(
            f"exclude_self needs the bank as queries: {len(queries)} queries, {len(bank)} bank rows"
        )
    available = len(bank) - int(exclude_self)
    if available < 1:
        raise ValueError(f"a k-NN vote needs at least one bank row to vote ({len(bank)} given)")
    device = bank.device
    bank = nn.functional.normalize(bank.float(), dim=1)
    queries = nn.functional.normalize(queries.float().to(device), dim=1)
    labels = bank_labels.long().to(device)
    num_classes = int(labels.max()) + 1
    k = min(k, available)
    rows = max(1, BLOCK_ELEMENTS // len(bank))
    predicted = [torch.empty(0, dtype=torch.long, device=device)]
    for start in range(0, len(queries), rows):
        similarity = queries[start : start + rows] @ bank.T
        if exclude_self:
            own = torch.arange(len(similarity), device=device)
            similarity[own, own + start] = -float("inf")
        top, index = similarity.topk(k, dim=1)
        weights = ((top - top[:, :1]) / temperature).exp()  # exp(sim / T), rescaled per row
        votes = torch.zeros(len(top), num_classes, device=device)
        votes.scatter_add_(1, labels[index], weights)
        predicted.append(votes.argmax(1))
    return torch.cat(predicted)


def knn_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = K,
    temperature: float = TEMPERATURE,
) -> float:
    """Accuracy on the test features of a k-NN vote among the training features."""
    if not len(test_features):
        return float("nan")
    predicted = knn_predict(train_features, train_labels, test_features, k, temperature)
    return float((predicted == test_labels.to(predicted.device)).float().mean())
