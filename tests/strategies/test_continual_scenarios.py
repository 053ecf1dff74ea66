"""Scenario construction: seeded class order, label conventions, task labels, domain shifts."""

import torch

from paralab.platform.config import load
from paralab.platform.runner import load_data
from paralab.strategies.continual.scenarios import (
    build_stream,
    class_order,
    pixel_permutations,
    split_classes,
)


def digits():
    return load_data(load("quickstart_continual", ["tracking.wandb=disabled"]))


def test_class_order_is_a_seeded_permutation():
    assert class_order(10, 0) == class_order(10, 0)
    assert sorted(class_order(10, 0)) == list(range(10))
    assert class_order(10, 0) != class_order(10, 1)
    assert class_order(10, None) == list(range(10))


def test_uneven_splits_give_the_first_experiences_one_class_more():
    assert split_classes([4, 2, 7, 1, 0, 9, 3], 3) == [[4, 2, 7], [1, 0], [9, 3]]


def test_class_incremental_relabels_to_class_order_positions():
    data = digits()
    order = class_order(10, 0)
    stream = build_stream(data.train, data.test, 10, "class", 5, 0)
    assert [e.classes for e in stream] == [order[i : i + 2] for i in range(0, 10, 2)]
    assert sum(len(e.train) for e in stream) == len(data.train)
    for i, exp in enumerate(stream):
        assert exp.task_label == 0
        assert sorted(set(exp.train.targets.tolist())) == [2 * i, 2 * i + 1]
        original = data.test.targets[torch.isin(data.test.targets, torch.tensor(exp.classes))]
        assert len(exp.test) == len(original)
        assert torch.equal(exp.test.targets, torch.tensor([order.index(int(t)) for t in original]))


def test_task_incremental_has_task_labels_and_local_labels():
    data = digits()
    stream = build_stream(data.train, data.test, 10, "task", 5, 3)
    assert [e.task_label for e in stream] == [0, 1, 2, 3, 4]
    assert sorted(c for e in stream for c in e.classes) == list(range(10))
    for exp in stream:
        assert sorted(set(exp.train.targets.tolist())) == [0, 1]
        assert sorted(set(exp.test.targets.tolist())) == [0, 1]


def test_split_domain_holds_class_pairs_with_local_labels_and_no_task_label():
    """van de Ven & Tolias's split MNIST Domain-IL: "first or second digit of its pair"."""
    data = digits()
    stream = build_stream(data.train, data.test, 10, "domain", 5, None, "split")
    assert [e.classes for e in stream] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    for exp in stream:
        assert exp.task_label == 0
        assert sorted(set(exp.train.targets.tolist())) == [0, 1]
        first = torch.isin(data.train.targets, torch.tensor(exp.classes[:1]))
        assert (exp.train.targets == 0).sum() == first.sum()


def test_a_split_domain_run_trains_one_head_of_two_outputs(out_dir):
    from paralab.platform.runner import execute

    summary = execute(load("quickstart_continual", [
        "tracking.wandb=disabled", "trainer.progress_bar=false", "paradigm.scenario=domain",
        "paradigm.domain_shift=split", "paradigm.iterations=20", "paradigm.epochs=null", out_dir,
    ]))  # fmt: skip
    metrics = summary["metrics"]
    assert summary["status"] == "completed"
    assert metrics["test/acc"] > 0.6  # two outputs: chance is 0.5


def test_permuted_domain_keeps_labels_and_permutes_pixels():
    data = digits()
    stream = build_stream(data.train, data.test, 10, "domain", 3, 0, "permuted")
    assert all(e.classes == list(range(10)) for e in stream)
    assert torch.equal(stream[0].train.images, data.train.images)
    perm = pixel_permutations(3, 64, 0)[1]
    assert not torch.equal(perm, torch.arange(64))
    n = len(data.test)
    expected = data.test.images.reshape(n, 1, 64)[:, :, perm].reshape(n, 1, 8, 8)
    assert torch.equal(stream[1].test.images, expected)
    assert torch.equal(stream[2].test.targets, data.test.targets)
    assert not torch.equal(stream[1].test.images, stream[2].test.images)


def test_rotated_domain_rotates_each_experience_further():
    data = digits()
    stream = build_stream(data.train, data.test, 10, "domain", 2, 0, "rotated")
    assert torch.equal(stream[0].train.images, data.train.images)
    # experience 1 of 2: 90 degrees counter-clockwise, exact on an 8x8 grid
    assert torch.equal(stream[1].train.images, torch.rot90(data.train.images, 1, (-2, -1)))
    assert torch.equal(stream[1].train.targets, data.train.targets)


def _masks_split(n: int = 12, size: int = 6):
    """Images whose masks hold classes 1..3 in fixed places (class of image i: 1 + i % 3,
    plus class 3 in a corner of every fourth image), a void pixel in each."""
    import torch

    from paralab.platform.data.base import InMemoryImages

    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        masks[i, 1:3, 1:3] = 1 + i % 3
        if i % 4 == 0:
            masks[i, 4:, 4:] = 3
        masks[i, 0, 0] = 255
    images = (masks.unsqueeze(1) * 40).clamp(max=255).to(torch.uint8)
    return InMemoryImages(images, masks, torch.zeros(1), torch.ones(1))


def test_dense_class_incremental_shifts_other_classes_to_background():
    import torch

    split = _masks_split()
    stream = build_stream(split, split, [1, 2, 3], "class", 3, None)
    assert [e.classes for e in stream] == [[1], [2], [3]]
    for e in stream:
        (c,) = e.classes
        train, test = e.train.targets, e.test.targets
        shown = torch.isin(split.targets.flatten(1), torch.tensor([c], dtype=torch.uint8)).any(1)
        assert len(train) == int(shown.sum()) == len(test)
        # training masks: only this experience's class and void survive, the rest is background
        assert set(train.unique().tolist()) <= {0, c, 255}
        assert int((train == c).sum()) == int((split.targets[shown] == c).sum())
        assert int((train == 255).sum()) == len(train)
        # test masks keep every class: the cell scores this experience's classes on them
        assert torch.equal(test, split.targets[shown])
        assert e.score_classes == [c]


def test_domain_shifts_move_masks_with_their_images():
    split = _masks_split()
    for shift in ("permuted", "rotated"):
        stream = build_stream(split, split, 4, "domain", 2, 0, shift)
        for e in stream:
            labelled = e.train.targets != 255
            # the images were made from the masks: moving both alike keeps them consistent
            expected = (e.train.targets.long() * 40).clamp(max=255)
            assert (e.train.images[:, 0].long()[labelled] == expected[labelled]).all(), shift


def test_joint_training_on_masks_keeps_every_class_labelled():
    split = _masks_split()
    stream = build_stream(split, split, [1, 2, 3], "class", 3, None, background_shift=False)
    for e in stream:
        assert torch.equal(e.train.targets, e.test.targets)  # the images of its classes, whole
