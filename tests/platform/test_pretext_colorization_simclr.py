"""Colorization's colour bins, SimCLR's views and loss, the built-in photos, and one short run
of each task end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from paralab.errors import ConfigError
from paralab.platform.config import load
from paralab.platform.data.photos import (
    PHOTOS,
    PhotosConfig,
    column_range,
    crop_boxes,
    load_photos,
    photos,
)
from paralab.platform.models import InputSpec
from paralab.platform.runner import build_model, build_task, execute, load_data, prepare
from paralab.platform.tasks.pretext.base import PretextOutput, PretextTargets
from paralab.platform.tasks.pretext.colorization import (
    BIN_SIZE,
    ab_bins,
    bin_weights,
    decode_bins,
    decode_logits,
    encode_ab,
    lab_of,
    rgb_of,
)
from paralab.platform.tasks.pretext.simclr import positive_index

QUIET = ["tracking.wandb=disabled", "trainer.progress_bar=false", "trainer.num_threads=1"]
SMALL_PHOTOS = ["data=photos", "data.train_images=240", "data.test_images=60"]
SMALL_UNET = ["model=unet", "model.backbone={name:cnn,channels:[8,16]}",
              "model.decoder_channels=[16,8]"]  # fmt: skip


# -- colorization's bins ----------------------------------------------------------------------


def test_bins_are_in_gamut_grid_centres_and_each_decodes_to_itself():
    bins = ab_bins()
    assert bins.shape[1] == 2 and 200 < len(bins) < 320  # Zhang et al.: 313
    assert torch.equal(bins, (bins / BIN_SIZE).round() * BIN_SIZE)
    index = torch.arange(len(bins))
    assert torch.equal(encode_ab(decode_bins(index)), index)


def test_in_gamut_colours_come_back_from_their_bins():
    torch.manual_seed(0)
    rgb = torch.rand(1, 3, 40, 40)
    lab = lab_of(rgb)
    ab = lab[:, 1:].movedim(1, -1)
    decoded = decode_bins(encode_ab(ab))
    assert (decoded - ab).norm(dim=-1).max() <= BIN_SIZE / 2 * 2**0.5 + 1e-4  # half a diagonal
    back = rgb_of(lab[:, :1], decoded.movedim(-1, 1))
    error = (back - rgb).abs()
    assert error.mean() < 0.03 and torch.quantile(error.flatten(), 0.99) < 0.2


def test_logits_decode_to_the_best_bin_or_the_annealed_mean():
    q = len(ab_bins())
    logits = torch.zeros(1, q, 2, 2)
    logits[0, 7] = 20.0
    expected = decode_bins(torch.tensor(7))
    for temperature in (0.0, 0.38):
        ab = decode_logits(logits, temperature)
        assert ab.shape == (1, 2, 2, 2)
        assert torch.allclose(ab[0, :, 0, 0], expected, atol=1e-3)
    flat = decode_logits(torch.zeros(1, q, 1, 1), 1.0)[0, :, 0, 0]
    assert torch.allclose(flat, ab_bins().mean(0), atol=1e-4)


def test_rebalancing_weights_favour_rare_bins_and_average_one():
    counts = torch.zeros(len(ab_bins()))
    counts[0], counts[100] = 1000, 10
    weights = bin_weights(counts, mix=0.5)
    assert weights[100] > weights[0]
    uniform = bin_weights(torch.ones(len(ab_bins())), mix=0.5)
    assert torch.allclose(uniform.mean(), torch.tensor(1.0), atol=0.05)


# -- colorization's task ----------------------------------------------------------------------


def test_colorization_refuses_greyscale_data_through_the_config_layer():
    config = load("quickstart_offline", ["task=colorization", *SMALL_UNET, *QUIET])
    message = (
        "task=colorization needs colour images; data=digits is greyscale. "
        "Choose an RGB dataset (data=photos, data=cifar10) or another pretext task"
    )
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare(config)


def test_colorization_feeds_grey_images_and_targets_their_bins():
    config = load("quickstart_offline", ["task=colorization", *SMALL_PHOTOS, *SMALL_UNET, *QUIET])
    data = load_data(config)
    task = build_task(config, data)
    task.check(config, data)
    images, labels = data.test.__getitems__(list(range(4)))
    inputs, targets = task.unpack((images, labels))
    mean, std = data.train.mean, data.train.std
    grey = inputs.views * std + mean
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-4)  # neutral: R = G = B
    assert torch.allclose(grey[:, 1], grey[:, 2], atol=1e-4)
    assert inputs.plain is inputs.views and torch.equal(targets.labels, labels)
    assert targets.pretext.shape == (4, 32, 32) and int(targets.pretext.max()) < task.num_outputs
    model = build_model(config, InputSpec(3, (32, 32), data.num_classes), task=task)
    model.eval()
    with torch.no_grad():
        outputs = task.forward(model, inputs)
    assert outputs.logits.shape == (4, task.num_outputs, 32, 32)
    assert outputs.features is not None and outputs.features.shape[0] == 4
    assert float(task.loss(outputs, targets)) > 0


def test_rebalancing_counts_the_training_colours_and_weights_the_loss():
    overrides = ["task=colorization", *SMALL_PHOTOS, *SMALL_UNET, *QUIET]
    config = load("quickstart_offline", [*overrides, "task.rebalance=true"])
    data = load_data(config)
    task = build_task(config, data)
    plain = build_task(load("quickstart_offline", overrides), data)
    assert plain.weights is None and task.weights.shape == (task.num_outputs,)
    _, targets = task.unpack(data.test.__getitems__(list(range(2))))
    logits = torch.zeros(2, task.num_outputs, 32, 32)
    outputs = PretextOutput(logits, None)
    uniform = float(plain.loss(outputs, targets))
    expected = uniform * float(task.weights[targets.pretext].mean())
    assert float(task.loss(outputs, targets)) == pytest.approx(expected, rel=1e-4)


# -- SimCLR -----------------------------------------------------------------------------------


def simclr_on_digits(*overrides: str):
    config = load("quickstart_offline", ["task=simclr", "model.channels=[16,32]",
                                         "model.dropout=0", *QUIET, *overrides])  # fmt: skip
    data = load_data(config)
    task = build_task(config, data)
    spec = InputSpec(data.in_channels, data.image_size, data.num_classes)
    return data, task, build_model(config, spec, task=task)


def test_simclr_views_differ_and_repeat_under_a_seed():
    data, task, _ = simclr_on_digits()
    images, labels = data.train.__getitems__(list(range(16)))
    torch.manual_seed(3)
    first, targets = task.unpack((images, labels))
    torch.manual_seed(3)
    again, _ = task.unpack((images, labels))
    assert first.views.shape == (32, *images.shape[1:])
    assert torch.equal(first.views, again.views)
    assert not torch.allclose(first.views[:16], first.views[16:])  # view 1 is not view 2
    assert torch.equal(targets.pretext, positive_index(16))


def test_pair_accuracy_counts_views_whose_nearest_other_view_is_their_positive():
    _, task, _ = simclr_on_digits()
    z = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0.05], [0, -1.0]])  # 1 and 3 point apart
    targets = PretextTargets(positive_index(2), torch.zeros(2, dtype=torch.long))
    metric = task.metrics()["pair_acc"]
    metric.update(PretextOutput(z, None), targets)
    assert float(metric.compute()) == pytest.approx(2 / 4)  # views 0 and 2 find each other


def test_simclr_loss_falls_and_pair_accuracy_rises_on_a_tiny_fit():
    data, task, model = simclr_on_digits("task.crop_scale_min=0.5", "task.jitter=0.2",
                                         "task.flip=false")  # fmt: skip
    batch = data.train.__getitems__(list(range(64)))
    torch.manual_seed(0)
    before = fixed_views_score(task, model, batch)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    model.train()
    for _ in range(30):
        inputs, targets = task.unpack(batch)
        loss = task.loss(task.forward(model, inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = fixed_views_score(task, model, batch)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    assert after["loss"] < before["loss"] and after["pair_acc"] > before["pair_acc"] + 0.05


def fixed_views_score(task, model, batch) -> dict[str, float]:
    """NT-Xent and pair accuracy in eval mode on views drawn under a fixed seed."""
    model.eval()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        inputs, targets = task.unpack(batch)
        outputs = task.forward(model, inputs)
        metrics = task.metrics()
        metrics.update(outputs, targets)
        values = task.summarize(metrics.compute())
        values["loss"] = float(task.loss(outputs, targets))
    model.train()
    return values


# -- photos -----------------------------------------------------------------------------------


def test_photos_are_deterministic_rgb_crops_with_a_class_per_photo():
    cfg = PhotosConfig(train_images=300, test_images=90)
    data, again = photos(cfg), photos(cfg)
    assert data.classes == [name for name, _, _ in PHOTOS] and data.in_channels == 3
    assert data.test.images.shape == (90, 3, 32, 32) and data.test.images.dtype == torch.uint8
    assert len(data.train) + len(data.val) == 300
    assert torch.equal(data.train.images, again.train.images)
    assert torch.equal(data.test.targets, again.test.targets)
    assert torch.bincount(data.test.targets).tolist() == [30, 30, 30]
    other = photos(PhotosConfig(train_images=300, test_images=90, seed=1))
    assert not torch.equal(other.test.images, data.test.images)


def test_photo_crops_come_from_disjoint_columns():
    cfg = PhotosConfig(scale_max=6.0)
    generator = torch.Generator().manual_seed(0)
    for photo in load_photos():
        height, width = photo.shape[1:]
        train, test = column_range(width, 0.2, "train"), column_range(width, 0.2, "test")
        assert train[1] == test[0] and test[1] == width
        for columns in (train, test):
            boxes = crop_boxes(500, height, columns, cfg, generator)
            assert (boxes[:, 0] >= columns[0]).all() and (boxes[:, 2] <= columns[1]).all()
            assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= height).all()
            assert torch.equal(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


# -- end to end -------------------------------------------------------------------------------


def test_simclr_runs_end_to_end_on_digits(tmp_path: Path):
    config = load("quickstart_offline", ["task=simclr", "model.channels=[8,16]",
                  "data.train_limit=256", "trainer.max_epochs=1", f"output_dir={tmp_path}",
                  *QUIET])  # fmt: skip
    summary = execute(config)
    metrics = summary["metrics"]
    assert 0 <= metrics["test/knn_acc"] <= 1 and 0 <= metrics["test/pair_acc"] <= 1
    assert metrics["test/loss"] > 0
    assert (Path(summary["run_dir"]) / "predictions.png").is_file()


def test_colorization_runs_end_to_end_on_photos(tmp_path: Path):
    config = load("quickstart_offline", ["task=colorization", *SMALL_PHOTOS, *SMALL_UNET,
                  "trainer.max_epochs=1", f"output_dir={tmp_path}", *QUIET])  # fmt: skip
    summary = execute(config)
    metrics = summary["metrics"]
    assert 0 <= metrics["test/knn_acc"] <= 1 and 0 <= metrics["test/bin_acc"] <= 1
    assert metrics["test/loss"] > 0
    assert (Path(summary["run_dir"]) / "predictions.png").is_file()
