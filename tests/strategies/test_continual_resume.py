"""An interrupted continual run resumed with --resume ends exactly like an uninterrupted one."""

from pathlib import Path

import pytest

from paralab.cli import main
from paralab.platform.config import load
from paralab.platform.runner import execute
from paralab.strategies.continual import checkpoint

OVERRIDES = [
    "trainer.max_epochs=1",
    "trainer.num_threads=1",
    "tracking.wandb=disabled",
    "paradigm.n_experiences=3",
    "paradigm.strategy=replay",
    "paradigm.mem_size=60",
]


def without_times(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("train_time")}


def test_resume_continues_at_the_next_experience_with_the_same_metrics(
    out_dir, monkeypatch, capsys
):
    whole = execute(load("quickstart_continual", [*OVERRIDES, out_dir]))

    save = checkpoint.save

    def save_then_stop_after_the_second(folder, strategy, progress):
        save(folder, strategy, progress)
        if progress.next_experience == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop_after_the_second)
    with pytest.raises(KeyboardInterrupt):
        execute(load("quickstart_continual", [*OVERRIDES, out_dir]))
    monkeypatch.setattr(checkpoint, "save", save)
    stopped = sorted(Path(out_dir.split("=", 1)[1]).iterdir())[-1]
    assert (stopped / "checkpoints" / checkpoint.FILE).is_file()
    capsys.readouterr()

    assert main(["run", "--resume", str(stopped)]) == 0
    err = capsys.readouterr().err
    assert "experience 3/3" in err and "experience 1/3" not in err  # only the rest is trained
    resumed = load_summary(stopped)
    assert resumed["resumed"] is True
    assert without_times(resumed["metrics"]) == without_times(whole["metrics"])
    # the rows of the finished experiences are kept from before the stop, not logged again
    assert without_times_rows(stopped) == without_times_rows(Path(whole["run_dir"]))


def without_times_rows(folder: Path) -> list[dict]:
    import csv

    with (folder / "metrics.csv").open(newline="") as file:
        return [{k: v for k, v in r.items() if "time" not in k} for r in csv.DictReader(file)]


def load_summary(folder: Path) -> dict:
    import json

    return json.loads((folder / "summary.json").read_text())
