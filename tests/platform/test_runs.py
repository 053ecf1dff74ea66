"""One run end to end: the run folder contract, same seed -> same metrics, resume."""

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

import paralab
from paralab.cli import main
from paralab.platform.tracking import write_json
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
    return {k: v for k, v in summary["metrics"].items() if not k.startswith(("time/", "memory/"))}


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
    straight_summary = paralab.run("quickstart_offline", overrides)
    straight = learned(straight_summary)
    with pytest.raises(RuntimeError, match="simulated crash"):
        paralab.run("quickstart_offline", overrides, callbacks=[Crash(epoch=2)])
    crashed = sorted((__import__("pathlib").Path(out_dir.split("=", 1)[1])).glob("*"))[-1]
    before = json.loads((crashed / "summary.json").read_text())
    assert before["status"] == "interrupted"
    resumed = paralab.resume(crashed)
    assert resumed["resumed"] is True
    assert learned(resumed) == straight
    # the whole history, as the uninterrupted run logged it; the time of both parts
    assert metric_rows(crashed) == metric_rows(Path(straight_summary["run_dir"]))
    assert resumed["wall_time_s"] > before["wall_time_s"] > 0
    assert resumed["started"] == before["started"]


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv as rows (what an uninterrupted run with the same seed logs)."""
    with (run_dir / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


class NoImprovement(L.Callback):
    """Report a falling val/acc after the first epoch, so Lightning's best checkpoint stays."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            trainer.callback_metrics["val/acc"] = torch.tensor(1.0 / (1 + trainer.current_epoch))


def test_last_checkpoint_is_the_last_epoch_even_when_val_acc_does_not_improve(out_dir):
    summary = paralab.run("quickstart_offline", [*FAST, out_dir, "trainer.max_epochs=3"],
                          callbacks=[NoImprovement()])  # fmt: skip
    checkpoints = Path(summary["run_dir"]) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == summary["metrics"]["steps"]


def test_resuming_a_completed_run_trains_nothing_and_changes_nothing(out_dir, capsys):
    summary = paralab.run("quickstart_offline", [*FAST, out_dir])
    folder = Path(summary["run_dir"])
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["run", "--resume", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert "completed earlier" in err and "epoch" not in err
    assert out.strip().splitlines()[-1] == str(folder)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert learned(paralab.resume(folder)) == learned(summary)


def strict_json(path: Path) -> dict:
    """Parse as strict JSON: NaN and Infinity are refused, as jq and browsers refuse them."""

    def refuse(constant: str):
        raise ValueError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_diverging_run_fails_with_exit_1_naming_the_epoch(out_dir, capsys):
    argv = ["run", "quickstart_offline", *FAST, out_dir, "optim.lr=1e30"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "diverged at epoch 1/2" in err and "optim.lr" in err
    folder = next(Path(out_dir.split("=", 1)[1]).iterdir())
    summary = strict_json(folder / "summary.json")
    assert summary["status"] == "failed" and "DivergedError" in summary["error"]
    assert not (folder / "checkpoints" / "last.ckpt").exists()  # no diverged model to resume


def test_summary_json_is_strict_json_when_a_metric_is_not_finite(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"metrics": {"a": math.nan, "b": math.inf, "c": 1.5}, "l": [-math.inf]})
    assert strict_json(path) == {"metrics": {"a": None, "b": None, "c": 1.5}, "l": [None]}


def test_wandb_offline_run_lands_in_the_run_folder(out_dir):
    summary = paralab.run("quickstart_offline", [*FAST, out_dir, "trainer.max_epochs=1",
                                                 "tracking.wandb=offline"])  # fmt: skip
    run_dir = __import__("pathlib").Path(summary["run_dir"])
    assert list((run_dir / "wandb").glob("offline-run-*"))
