"""The image-text task: retrieval recall and zero-shot accuracy on hand-made embeddings, chance
levels, phrasing choice, and a short run under each paradigm's path."""

from __future__ import annotations

import math

import pytest
import torch

from paralab.platform.tasks.image_text import (
    ImageText,
    ImageTextConfig,
    ImageTextOutput,
    chance_at,
    recall_at,
)


def task(unseen: list[int] = ()) -> ImageText:
    t = ImageText(ImageTextConfig(), ["a", "b"])
    t.unseen_captions = torch.tensor(list(unseen), dtype=torch.long)
    return t


def scored(image, text, targets, zero_shot, unseen=()) -> dict[str, float]:
    t = task(unseen)
    metric = t.metrics()
    metric.update(ImageTextOutput(image, text, torch.tensor(10.0), zero_shot), targets)
    return t.summarize(metric.compute())


def test_matching_embeddings_recall_everything_and_chance_is_k_over_captions():
    eye = torch.eye(4)
    targets = torch.tensor([[0, 0, -1], [1, 1, -1], [0, 2, -1], [1, 3, -1]])
    zero_shot = torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 0]])  # the last one wrong
    values = scored(eye, eye, targets, zero_shot)
    assert values["i2t_r1"] == values["t2i_r1"] == 1.0
    assert values["zero_shot_acc"] == 0.75
    assert values["i2t_r1_chance"] == pytest.approx(1 / 4)
    assert values["t2i_r5_chance"] == 1.0  # 4 images: any 5 include its one


def test_images_sharing_a_caption_count_each_other_as_hits():
    image = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0]])
    text = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0]])
    targets = torch.tensor([[0, 7, -1], [0, 7, -1], [1, 9, -1]])  # images 0 and 1: caption 7
    values = scored(image, text, targets, torch.eye(2)[[0, 0, 1]])
    assert values["i2t_r1"] == 1.0 and values["t2i_r1"] == 1.0
    # t2i chance: caption 7 has 2 of 3 images, caption 9 one
    assert values["t2i_r1_chance"] == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_unseen_compositions_are_scored_apart():
    image = torch.eye(3)
    text = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]])  # image 2's caption is wrong
    targets = torch.tensor([[0, 0, -1], [1, 1, -1], [0, 2, -1]])
    values = scored(image, text, targets, torch.eye(2)[[0, 1, 0]], unseen=[2])
    assert values["i2t_r1_unseen"] == 0.0
    assert values["i2t_r1"] == pytest.approx(2 / 3)


def test_recall_and_chance_helpers():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.2, 0.3]])
    hits = torch.tensor([[False, False, True], [True, False, False]])
    assert recall_at(sim, hits, 1).tolist() == [0.0, 0.0]
    assert recall_at(sim, hits, 2).tolist() == [1.0, 0.0]
    assert chance_at(torch.tensor([1.0]), 10, 3).item() == pytest.approx(0.3)
    expected = 1 - math.comb(8, 3) / math.comb(10, 3)
    assert chance_at(torch.tensor([2.0]), 10, 3).item() == pytest.approx(expected)


def test_training_picks_a_real_phrasing_and_evaluation_the_first():
    t = task()
    t._tokens = torch.arange(5)[:, None].repeat(1, 4)  # caption i -> tokens all i
    t._prompts = torch.zeros(2 * len(t.cfg.templates), 4, dtype=torch.long)
    targets = torch.tensor([[0, 1, 3, -1], [1, 4, -1, -1]])
    images = torch.zeros(2, 1, 8, 8)
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        (_, tokens, prompts), _ = t.unpack((images, targets))
        assert prompts is None
        seen.add((int(tokens[0, 0]), int(tokens[1, 0])))
    assert {a for a, _ in seen} == {1, 3} and {b for _, b in seen} == {4}
    with torch.no_grad():
        (_, tokens, prompts), _ = t.unpack((images, targets))
    assert tokens[:, 0].tolist() == [1, 4] and prompts is not None


def test_a_training_pass_scores_nothing():
    metric = task().metrics()
    out = ImageTextOutput(torch.eye(2), torch.eye(2), torch.tensor(1.0), None)
    metric.update(out, torch.tensor([[0, 0], [1, 1]]))
    assert metric.compute() == {}
