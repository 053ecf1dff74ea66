"""Partitioners: every image to exactly one client, the label skew each scheme promises, seeded."""

import numpy as np
import pytest

from paralab.strategies.federated.partition import histograms, partition, summarize

LABELS = np.repeat(np.arange(10), 100)  # 1,000 labels, 100 per class


def covers_everything_once(parts: list[np.ndarray]) -> bool:
    joined = np.concatenate(parts)
    return len(joined) == len(LABELS) and np.array_equal(np.sort(joined), np.arange(len(LABELS)))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_every_image_goes_to_exactly_one_client(scheme):
    parts = partition(LABELS, 20, scheme, seed=0, alpha=0.3)
    assert len(parts) == 20
    assert covers_everything_once(parts)
    assert min(len(p) for p in parts) >= 1


def test_iid_sizes_are_balanced_and_every_client_sees_most_classes():
    parts = partition(LABELS, 10, "iid", seed=0)
    assert {len(p) for p in parts} == {100}
    assert summarize(histograms(LABELS, parts, 10))["partition/mean_classes_per_client"] >= 9


def test_shards_give_each_client_two_label_shards():
    parts = partition(LABELS, 50, "shards", seed=0, shards_per_client=2)
    assert {len(p) for p in parts} == {20}
    counts = histograms(LABELS, parts, 10)
    assert ((counts > 0).sum(1) <= 2).all()  # shards of 10 never straddle two classes here


def test_dirichlet_skew_grows_as_alpha_shrinks():
    def classes(alpha):
        parts = partition(LABELS, 20, "dirichlet", seed=0, alpha=alpha)
        return summarize(histograms(LABELS, parts, 10))["partition/mean_classes_per_client"]

    assert classes(0.1) < classes(1.0) < classes(100.0)
    assert classes(100.0) >= 9


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_partitions_are_deterministic_for_a_seed(scheme):
    a = partition(LABELS, 10, scheme, seed=3)
    b = partition(LABELS, 10, scheme, seed=3)
    c = partition(LABELS, 10, scheme, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_an_empty_dirichlet_client_gets_one_image():
    parts = partition(LABELS[:30], 25, "dirichlet", seed=1, alpha=0.01)
    assert min(len(p) for p in parts) >= 1 and covers_everything_once_small(parts, 30)


def covers_everything_once_small(parts, n):
    return np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))
