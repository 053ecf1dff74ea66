"""Probing on another dataset (``probe.data``) and zero-shot accuracy (``probe.zero_shot``):
images fitted to the run's form, prompts in the captions' words, a CLIP run probed on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from paralab.cli import main
from paralab.errors import ConfigError
from paralab.platform.config import load
from paralab.platform.data import InMemoryImages
from paralab.platform.data.captions import class_prompts
from paralab.platform.probes.transfer import fit_images
from paralab.platform.probes.zero_shot import zero_shot_accuracy
from paralab.platform.runner import execute

QUICK = ["tracking.wandb=disabled", "trainer.num_threads=1", "trainer.progress_bar=false"]


def test_pad_centres_small_images_on_black_and_shrinks_only_larger_ones():
    items = torch.full((2, 1, 4, 6), 200, dtype=torch.uint8)
    padded = fit_images(items, 1, (8, 10))
    assert padded.shape == (2, 1, 8, 10) and padded.dtype == torch.uint8
    assert (padded[:, :, 2:6, 2:8] == 200).all() and padded.sum() == 2 * 24 * 200
    large = fit_images(torch.full((1, 1, 20, 10), 100, dtype=torch.uint8), 1, (8, 8))
    assert (large[0, 0, :, 2:6] == 100).all() and (large[0, 0, :, :2] == 0).all()  # 8x4, centred
    same = torch.randint(0, 255, (3, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(fit_images(same, 1, (8, 8)), same)


def test_resize_scales_to_the_size_and_channels_convert_grey_and_colour():
    grey = torch.full((1, 1, 4, 4), 90, dtype=torch.uint8)
    colour = fit_images(grey, 3, (8, 8), "resize")
    assert colour.shape == (1, 3, 8, 8) and (colour == 90).all()
    rgb = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    rgb[:, 0], rgb[:, 1], rgb[:, 2] = 100, 200, 50
    assert (fit_images(rgb, 1, (2, 2)) == round(0.299 * 100 + 0.587 * 200 + 0.114 * 50)).all()
    with pytest.raises(ConfigError, match="4 channels and the run's model takes 3"):
        fit_images(torch.zeros(1, 4, 2, 2, dtype=torch.uint8), 3, (2, 2))


def test_prompts_name_classes_in_the_captions_words():
    prompts = class_prompts(["trouser", "ankle boot", "7", "Airplane"], ["a photo of a {}", "a {}"])
    assert prompts == [
        "a photo of a pair of trousers", "a pair of trousers",
        "a photo of an ankle boot", "an ankle boot",
        "a photo of a digit 7", "a digit 7",
        "a photo of an airplane", "an airplane",
    ]  # fmt: skip


class _Matching(nn.Module):
    """Images of constant pixel value 20 * c embed as class c, prompts as the digit they name."""

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([int(t.split()[-1]) for t in texts])  # "a digit 3" -> 3

    def encode_classes(self, tokens: torch.Tensor, num_classes: int) -> torch.Tensor:
        return F.one_hot(tokens, 4).float().view(num_classes, -1, 4)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        value = (x[:, 0, 0, 0] * 255).round().long() // 20
        return F.one_hot(value.clamp(0, 3), 4).float()


def test_zero_shot_scores_the_class_whose_prompts_match_the_image():
    labels = torch.arange(40) % 4
    images = (labels * 20).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    plain = InMemoryImages(images, labels, torch.zeros(1), torch.ones(1))
    model, classes = _Matching(), ["0", "1", "2", "3"]
    assert zero_shot_accuracy(model, plain, classes, ["a {}", "one {}"], batch_size=7) == 1.0
    shuffled = InMemoryImages(images, labels.roll(1), torch.zeros(1), torch.ones(1))
    assert zero_shot_accuracy(model, shuffled, classes, ["a {}", "one {}"]) == 0.0


TINY_CLIP = [*QUICK, "data.train_images=64", "data.test_images=32", "trainer.max_epochs=1",
             "probe.enabled=true", "probe.data=digits", "probe.zero_shot=true",
             "probe.train_limit=200", "probe.linear_epochs=5"]  # fmt: skip


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory) -> dict:
    """One epoch of the quickstart CLIP on 64 captioned digit canvases, probed on digits."""
    out = tmp_path_factory.mktemp("clip-probe")
    return execute(load("quickstart_clip", [*TINY_CLIP, f"output_dir={out}"]))


def test_a_clip_run_ends_with_zero_shot_and_linear_probes_on_a_labelled_set(clip_run):
    metrics = clip_run["metrics"]
    assert 0.0 <= metrics["probe/zero_shot_acc"] <= 1.0
    assert metrics["probe/test_images"] == 359  # digits' test split (20% of 1,797)
    assert metrics["probe/train_images"] == 200 and metrics["probe/linear_acc"] > 0.3  # chance 0.1
    assert "test/zero_shot_acc" in metrics  # the canvases' own zero-shot stays beside it


def test_paralab_probe_repeats_the_end_of_run_probe(clip_run, capsys):
    run_dir = Path(clip_run["run_dir"])
    assert main(["probe", str(run_dir)]) == 0
    assert "probe/zero_shot_acc=" in capsys.readouterr().out
    written = json.loads((run_dir / "probe.json").read_text())
    assert written["dataset"] == "digits" and written["probe"]["fit"] == "pad"
    for key in ("probe/zero_shot_acc", "probe/linear_acc", "probe/knn_acc"):
        assert written["metrics"][key] == pytest.approx(clip_run["metrics"][key])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["probe.data=nope"], "probe.data='nope' is not a registered dataset of labelled images"),
        (["probe.data=canvas_digits"], "Choose one of: "),
        (["probe.fit=crop"], "probe.fit"),
        (["probe.data=null"], "Probe on a dataset of labelled images: probe.data=<dataset>"),
    ],
)
def test_bad_probe_settings_fail_before_a_run_folder_exists(refuses, overrides, message):
    refuses("quickstart_clip", [*TINY_CLIP, *overrides], message)


def test_zero_shot_needs_a_text_tower(refuses):
    overrides = [*QUICK, "probe.enabled=true", "probe.zero_shot=true"]
    refuses("quickstart_offline", overrides, "model=cnn has no text tower")


def test_load_model_reads_every_tensor_and_refuses_another_model(tmp_path):
    from paralab.platform.config import validate_section
    from paralab.platform.models import MODELS, InputSpec
    from paralab.platform.models.transfer import load_model

    def build(name: str, **values):
        entry = MODELS.get(name)
        cfg = validate_section("model", {"name": name, **values}, entry.config)
        return entry.obj(cfg, InputSpec(1, (16, 16), 4))

    torch.manual_seed(0)
    trained = build("clip", embed_dim=8, text_width=8, context_length=8)
    file = tmp_path / "last.ckpt"  # Lightning's layout: the module's keys under "model."
    state = {f"model.{k}": v for k, v in trained.state_dict().items()}
    torch.save({"state_dict": state}, file)
    fresh = build("clip", embed_dim=8, text_width=8, context_length=8)
    assert load_model(fresh, file) == len(trained.state_dict())
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    with pytest.raises(ConfigError, match=r"does not hold this model .*unexpected: "):
        load_model(build("cnn"), file)
    with pytest.raises(ConfigError, match="other shape: "):
        load_model(build("clip", embed_dim=16, text_width=8, context_length=8), file)
