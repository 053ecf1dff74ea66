"""Segmentation under every paradigm, end to end on tiny canvases: a run repeats with the same
seed, an interrupted run resumed ends like an uninterrupted one, and a backbone trained by a
classification run loads into a segmentation run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import paralab
from paralab.strategies.continual import checkpoint
from tests.platform.test_runs import Crash
from tests.strategies.test_federated_run import StopAfterRound

TINY = [
    "data.train_images=160",
    "data.test_images=48",
    "model.backbone={name:cnn,channels:[8,16]}",
    "model.decoder_channels=[16,8]",
    "tracking.wandb=disabled",
    "trainer.progress_bar=false",
    "trainer.num_threads=1",
]
CONTINUAL = ["paradigm=continual", "paradigm.n_experiences=3", "paradigm.strategy=replay",
             "paradigm.mem_size=40", "trainer.max_epochs=1"]  # fmt: skip
FEDERATED = ["paradigm=federated", "paradigm.num_clients=4", "paradigm.min_train_clients=4",
             "paradigm.rounds=3", "paradigm.partition.scheme=dirichlet",
             "paradigm.partition.alpha=0.5", "paradigm.ray_num_cpus=2"]  # fmt: skip


def run(out: Path, *overrides: str, **kwargs) -> dict:
    overrides = [*TINY, f"output_dir={out}", *overrides]
    return paralab.run("quickstart_segmentation", overrides, **kwargs)


def learned(summary: dict) -> dict:
    """Everything but timings."""
    return {
        k: v
        for k, v in summary["metrics"].items()
        if "time" not in k and "startup" not in k and "memory/" not in k
    }


def rows(folder: Path) -> list[dict]:
    with (folder / "metrics.csv").open(newline="") as file:
        return [{k: v for k, v in r.items() if "time" not in k} for r in csv.DictReader(file)]


def latest(out: Path) -> Path:
    return sorted(out.iterdir())[-1]


def test_supervised_repeats_and_resumes(tmp_path):
    straight = run(tmp_path, "trainer.max_epochs=3")
    metrics = straight["metrics"]
    assert metrics["test/miou"] > metrics["test/miou_all_background"]
    assert 0 <= metrics["test/pixel_acc"] <= 1 and "test/iou/background" in metrics
    assert learned(run(tmp_path, "trainer.max_epochs=3")) == learned(straight)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, "trainer.max_epochs=3", callbacks=[Crash(epoch=2)])
    resumed = paralab.resume(latest(tmp_path))
    assert resumed["resumed"] is True and learned(resumed) == learned(straight)
    assert rows(latest(tmp_path)) == rows(Path(straight["run_dir"]))


def test_continual_class_incremental_repeats_and_resumes(tmp_path, monkeypatch):
    straight = run(tmp_path, *CONTINUAL)
    folder = Path(straight["run_dir"])
    saved = json.loads((folder / "accuracy_matrix.json").read_text())
    assert saved["score"] == "test/miou" and len(saved["matrix"]) == 3
    metrics = straight["metrics"]  # the whole test split, as an offline run reports it
    assert 0 <= metrics["test/miou"] <= 1 and "test/iou/background" in metrics
    assert metrics["test/miou_avg"] == pytest.approx(sum(saved["matrix"][-1]) / 3)
    assert learned(run(tmp_path, *CONTINUAL)) == learned(straight)

    save = checkpoint.save

    def save_then_stop(folder, strategy, progress):
        save(folder, strategy, progress)
        if progress.next_experience == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *CONTINUAL)
    monkeypatch.setattr(checkpoint, "save", save)
    resumed = paralab.resume(latest(tmp_path))
    assert learned(resumed) == learned(straight)


def test_continual_domain_incremental_runs(tmp_path):
    summary = run(tmp_path, *CONTINUAL, "paradigm.scenario=domain", "paradigm.strategy=naive",
                  "paradigm.n_experiences=2", "paradigm.domain_shift=rotated")  # fmt: skip
    assert summary["status"] == "completed" and 0 <= summary["metrics"]["test/miou"] <= 1


def test_federated_non_iid_resumes_to_the_uninterrupted_metrics(tmp_path):
    """Two runs with one seed (one stopped after round 2 and resumed) end with equal metrics:
    the same-seed check too, at the cost of one Ray simulation fewer."""
    straight = run(tmp_path, *FEDERATED)
    metrics = straight["metrics"]
    assert metrics["rounds"] == 3 and 0 <= metrics["test/miou"] <= 1
    assert "test/best_miou" in metrics
    folder = Path(straight["run_dir"])
    assert (folder / "client_histograms.png").is_file()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *FEDERATED, callbacks=[StopAfterRound(2)])
    resumed = paralab.resume(latest(tmp_path))
    assert learned(resumed) == learned(straight)


def test_a_classification_backbone_loads_into_a_segmentation_run(tmp_path):
    classify = paralab.run("quickstart_offline", [
        "model.channels=[8,16]", "trainer.max_epochs=1", "tracking.wandb=disabled",
        "trainer.progress_bar=false", f"output_dir={tmp_path / 'cls'}"])  # fmt: skip
    weights = Path(classify["run_dir"])
    segment = run(tmp_path / "seg", "trainer.max_epochs=1", f"model.init_from={weights}")
    assert segment["status"] == "completed"

    from paralab.platform.config import load
    from paralab.platform.models import InputSpec
    from paralab.platform.runner import build_model, load_data

    config = load("quickstart_segmentation", [*TINY, f"model.init_from={weights}"])
    data = load_data(config)
    model = build_model(config, InputSpec(1, data.image_size, data.num_classes))
    trained = torch.load(weights / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, trained[f"model.backbone.{name}"]), name
