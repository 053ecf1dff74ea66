"""One run end to end: the run folder contract, same seed -> same metrics, resume."""

import json

import lightning as L
import pytest
import yaml

import paralab
from tests.conftest import FAST


def test_run_folder_holds_config_metrics_summary_and_checkpoints(out_dir):
    summary = paralab.run("quickstart_offline", [*FAST, out_dir])
    run_dir = __import__("pathlib").Path(summary["run_dir"])
    assert (run_dir / "config.yaml").is_file()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 2 and saved["model"]["name"] == "cnn"
    written = json.loads((run_dir / "summary.json").read_text())
    assert written["status"] == "completed"
    for key in (
        "name",
        "paradigm",
        "model",
        "dataset",
        "seed",
        "metrics",
        "wall_time_s",
        "versions",
    ):
        assert key in written
    assert written["metrics"]["test/acc"] > 0.5
    assert written["metrics"]["time/train_images_per_s"] > 0
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "val/acc", "train/loss", "test/acc"} <= set(header)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def learned(summary: dict) -> dict:
    """The metrics a run learned: everything but timings (``time/...``)."""
    return {k: v for k, v in summary["metrics"].items() if not k.startswith("time/")}


def test_same_seed_same_metrics_other_seed_other_metrics(out_dir):
    a = learned(paralab.run("quickstart_offline", [*FAST, out_dir]))
    b = learned(paralab.run("quickstart_offline", [*FAST, out_dir]))
    c = learned(paralab.run("quickstart_offline", [*FAST, out_dir, "seed=1"]))
    assert a == b
    assert a["train/loss"] != c["train/loss"]


class Crash(L.Callback):
    """Stop the run like a power cut at the start of the given epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_resume_after_a_crash_ends_with_the_uninterrupted_metrics(out_dir):
    overrides = [*FAST, out_dir, "trainer.max_epochs=3", "data.augment=[crop]", "model.dropout=0.3"]
    straight = learned(paralab.run("quickstart_offline", overrides))
    with pytest.raises(RuntimeError, match="simulated crash"):
        paralab.run("quickstart_offline", overrides, callbacks=[Crash(epoch=2)])
    crashed = sorted((__import__("pathlib").Path(out_dir.split("=", 1)[1])).glob("*"))[-1]
    assert json.loads((crashed / "summary.json").read_text())["status"] == "interrupted"
    resumed = paralab.resume(crashed)
    assert resumed["resumed"] is True
    assert learned(resumed) == straight


def test_wandb_offline_run_lands_in_the_run_folder(out_dir):
    summary = paralab.run("quickstart_offline", [*FAST, out_dir, "trainer.max_epochs=1",
                                                 "tracking.wandb=offline"])  # fmt: skip
    run_dir = __import__("pathlib").Path(summary["run_dir"])
    assert list((run_dir / "wandb").glob("offline-run-*"))
