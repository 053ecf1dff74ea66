"""``model.init_from``: a backbone trained by one run starts another of any task or paradigm.

A tiny supervised digits run is the source. Its backbone loads into a classification run with
another head size (a 3-class image folder), into continual and federated runs (the driver's
model; federated clients take the server's weights instead), and a run resumed from its own
checkpoint does not need the source any more. A mismatched architecture or a missing path is
bad input (exit code 2) before any run folder exists, and the message names both models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import paralab
from paralab.cli import main
from paralab.errors import ConfigError
from paralab.platform.config import load
from paralab.platform.models import InputSpec
from paralab.platform.runner import build_model, build_task, execute, prepare

TINY = [
    "trainer.max_epochs=1",
    "trainer.num_threads=1",
    "trainer.progress_bar=false",
    "tracking.wandb=disabled",
    "model.channels=[8,16]",
]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The run folder of a tiny supervised cnn trained on digits (10 classes)."""
    out = tmp_path_factory.mktemp("source")
    return Path(paralab.run("quickstart_offline", [*TINY, f"output_dir={out}"])["run_dir"])


def trained_backbone(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    prefix = "model.backbone."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def assert_loaded(model: torch.nn.Module, run_dir: Path) -> None:
    theirs = trained_backbone(run_dir)
    mine = model.backbone.state_dict()
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        assert torch.equal(tensor, theirs[name]), name


def built(config) -> torch.nn.Module:
    """The model a run's driver builds (after the checks ``prepare`` makes)."""
    data, _ = prepare(config)
    spec = InputSpec(data.in_channels, data.image_size, data.num_classes)
    return build_model(config, spec, task=build_task(config, data))


def write_three_digit_classes(root: Path) -> Path:
    """An image folder of scikit-learn digits 0, 1 and 2: 8x8 gray images, 3 classes."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in (0, 1, 2):
        (root / str(label)).mkdir(parents=True)
        images = digits.images[digits.target == label][:30]
        for i, image in enumerate(images):
            pixels = (image * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / str(label) / f"{i}.png")
    return root


def test_a_backbone_loads_into_a_classification_run_with_another_head(source, tmp_path):
    folder = write_three_digit_classes(tmp_path / "three")
    overrides = [*TINY, "data=image_folder", f"data.path={folder}", "data.image_size=8",
                 "data.grayscale=true", f"model.init_from={source}",
                 f"output_dir={tmp_path / 'runs'}"]  # fmt: skip
    config = load("quickstart_offline", overrides)
    model = built(config)
    assert model.head.out_features == 3  # the source's head has 10 outputs: not loaded
    assert_loaded(model, source)

    summary = execute(config)
    assert summary["status"] == "completed"
    saved = yaml.safe_load((Path(summary["run_dir"]) / "config.yaml").read_text())
    assert saved["model"]["init_from"] == str(source)


@pytest.mark.parametrize("experiment", ["quickstart_federated", "quickstart_continual"])
def test_a_backbone_loads_into_federated_and_continual_runs(source, experiment):
    config = load(experiment, [*TINY, f"model.init_from={source}"])
    assert_loaded(built(config), source)


def test_federated_clients_take_the_servers_weights_not_the_file(source, tmp_path):
    """Each client's model is built without reading model.init_from (on a cluster the file
    may not be there): the server's weights, init_from's backbone among them, arrive every
    round."""
    from paralab.strategies.federated.client import _WORKERS, worker_state

    copy = shutil.copytree(source, tmp_path / "copy")
    config = load("quickstart_federated", [*TINY, f"model.init_from={copy}"])
    shutil.rmtree(copy)
    try:
        state = worker_state("test-init-from", config.plain)
        assert not torch.equal(
            state.model.backbone.stages[0][0].weight.cpu(),
            trained_backbone(source)["stages.0.0.weight"],
        )
    finally:
        _WORKERS.clear()


def test_a_mismatched_backbone_is_bad_input_naming_both_models(source, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["run", "quickstart_offline", *TINY[:-1], f"output_dir={out}"]
    args.append(f"model.init_from={source}")
    assert main([*args, "model.channels=[8,32]"]) == 2
    err = capsys.readouterr().err
    assert "model.init_from=" in err and str(source) in err
    assert "The checkpoint's backbone is cnn (channels=[8,16]), on digits" in err
    assert "this run's is cnn (channels=[8,32]), on digits" in err
    assert "Set model.channels=[8,16], or model.init_from=null" in err

    assert main([*args, "model=vit"]) == 2  # another model: its options are listed
    err = capsys.readouterr().err
    assert "The checkpoint's backbone is cnn (channels=[8,16]" in err
    assert "this run's is vit (patch_size=4" in err and "Set model=cnn model.channels=[8,16]" in err
    assert not out.exists()


def test_a_dense_model_is_told_its_backbone_override(source):
    config = load("quickstart_segmentation", [
        "data.train_images=40", "data.test_images=20", "trainer.num_threads=1",
        "model.backbone={name:cnn,channels:[8,32]}", f"model.init_from={source}"])  # fmt: skip
    with pytest.raises(ConfigError) as error:
        built(config)
    message = str(error.value)
    assert "this run's is cnn (channels=[8,32]) in unet, on canvas_digits" in message
    assert "Set model.backbone={name: cnn, channels: [8,16]}" in message


def test_a_missing_source_is_bad_input_before_any_folder(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["run", "quickstart_offline", *TINY, f"output_dir={out}",
                 f"model.init_from={tmp_path / 'nowhere'}"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "model.init_from=" in err and "nowhere" in err and "no such file or folder" in err
    assert not out.exists()


def test_init_from_belongs_to_the_model_not_its_backbone_section(source):
    config = load("quickstart_segmentation", ["data.train_images=40", "data.test_images=20",
                  f"model.backbone={{name:cnn,init_from:{source}}}"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"model.backbone.init_from.*Set model.init_from="):
        built(config)


def test_a_run_resumed_from_its_checkpoint_no_longer_needs_the_source(source, tmp_path):
    copy = shutil.copytree(source, tmp_path / "copy")
    summary = paralab.run(
        "quickstart_offline", [*TINY, f"model.init_from={copy}", f"output_dir={tmp_path}"]
    )
    run_dir = Path(summary["run_dir"])
    shutil.rmtree(copy)
    interrupted = {**summary, "status": "interrupted"}
    (run_dir / "summary.json").write_text(json.dumps(interrupted))
    resumed = paralab.resume(run_dir)
    assert resumed["status"] == "completed" and resumed["resumed"] is True
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["init_from"] == str(copy)  # still recorded
