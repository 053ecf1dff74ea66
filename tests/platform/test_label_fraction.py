"""``data.label_fraction``: fine-tuning on a seeded, class-balanced part of the training labels.

Per class ``max(1, round(f * n_c))`` examples; the same seed gives the same part, a smaller
fraction's part lies inside a larger one's, validation and test splits and the normalisation
(computed on every training image) do not change, and segmentation data refuse it.
"""

from __future__ import annotations

import pytest
import torch

from paralab.errors import ConfigError
from paralab.platform.config import load, validate_section
from paralab.platform.data import DATASETS
from paralab.platform.data.labels import label_subset


def digits(**options):
    entry = DATASETS.get("digits")
    return entry.obj(validate_section("data", {"name": "digits", **options}, entry.config))


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_each_class_keeps_its_share_of_labels(fraction):
    full, part = digits(), digits(label_fraction=fraction)
    n = torch.bincount(full.train.targets, minlength=10)
    kept = torch.bincount(part.train.targets, minlength=10)
    expected = [max(1, round(fraction * int(c))) for c in n]
    assert kept.tolist() == expected
    assert torch.equal(part.val.targets, full.val.targets)
    assert torch.equal(part.test.targets, full.test.targets)
    assert torch.equal(part.train.mean, full.train.mean)  # every training image's statistics
    assert torch.equal(part.train.std, full.train.std)


def test_the_part_is_seeded_and_nested_across_fractions():
    a, b = digits(label_fraction=0.1), digits(label_fraction=0.1)
    assert torch.equal(a.train.images, b.train.images)
    assert torch.equal(a.train.targets, b.train.targets)
    other = digits(label_fraction=0.1, split_seed=1)
    assert not torch.equal(a.train.targets, other.train.targets[: len(a.train.targets)])

    labels = torch.arange(1000) % 7
    small, large = label_subset(labels, 0.02, seed=3), label_subset(labels, 0.2, seed=3)
    assert set(small.tolist()) < set(large.tolist())
    assert torch.equal(small, label_subset(labels, 0.02, seed=3))
    assert not torch.equal(small, label_subset(labels, 0.02, seed=4))
    assert torch.equal(label_subset(labels, 1.0, seed=3), torch.arange(1000))


def test_fraction_bounds_and_masks_are_refused():
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match=r"data.label_fraction=.*in \(0, 1\]"):
            load("quickstart_offline", [f"data.label_fraction={bad}"])
    entry = DATASETS.get("canvas_digits")
    values = {"name": "canvas_digits", "train_images": 40, "test_images": 20,
              "label_fraction": 0.5}  # fmt: skip
    with pytest.raises(ConfigError, match=r"label_fraction=0.5.*masks.*label_fraction=null"):
        entry.obj(validate_section("data", values, entry.config))


def test_a_run_config_records_the_fraction(tmp_path):
    from pathlib import Path

    import yaml

    import paralab

    summary = paralab.run("quickstart_offline", [
        "data.label_fraction=0.05", "trainer.max_epochs=1", "trainer.num_threads=1",
        "tracking.wandb=disabled", "trainer.progress_bar=false", "model.channels=[8,16]",
        f"output_dir={tmp_path}"])  # fmt: skip
    saved = yaml.safe_load((Path(summary["run_dir"]) / "config.yaml").read_text())
    assert saved["data"]["label_fraction"] == 0.05 and summary["status"] == "completed"
