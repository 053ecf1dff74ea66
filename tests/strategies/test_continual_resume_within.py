"""A continual run stopped in the middle of an experience resumes after its last finished epoch
and ends exactly like an uninterrupted run, for every kind of state a method keeps between
epochs (buffers, per-iteration importances, exemplar class lists, growing datasets), under an
epoch budget and under an iteration budget."""

from pathlib import Path

import pytest

from paralab.cli import main
from paralab.platform.config import load
from paralab.platform.runner import execute
from paralab.strategies.continual import checkpoint

BASE = [
    "trainer.num_threads=1",
    "tracking.wandb=disabled",
    "trainer.progress_bar=false",
    "paradigm.n_experiences=3",
    "paradigm.mem_size=60",
    "data.batch_size=64",
]
EPOCHS = ["paradigm.epochs=3"]
ITERATIONS = ["paradigm.iterations=15"]  # 7-8 batches an epoch: two epochs, the last cut short


def without_times(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if "time" not in k and "memory" not in k}


def stop_inside(experience: int, monkeypatch) -> list[int]:
    """Stop right after the first mid-experience save of ``experience``; returns the epochs
    done in that experience at each such save."""
    save_within, saved = checkpoint.save_within, []

    def save_then_stop(folder, strategy, at):
        save_within(folder, strategy, at)
        if at == experience:
            saved.append(strategy.clock.train_exp_epochs)
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_within", save_then_stop)
    return saved


@pytest.mark.parametrize(
    ("strategy", "budget"),
    [
        ("naive", ITERATIONS),
        ("replay", EPOCHS),
        ("si", ITERATIONS),
        ("icarl", EPOCHS),
        ("cumulative", EPOCHS),
        ("lwf", ITERATIONS),
        ("joint", EPOCHS),
    ],
)
def test_a_run_stopped_inside_an_experience_resumes_there_with_the_same_metrics(
    strategy, budget, out_dir, monkeypatch, capsys
):
    overrides = [*BASE, *budget, f"paradigm.strategy={strategy}", out_dir]
    whole = execute(load("quickstart_continual", overrides))

    experience = 0 if strategy == "joint" else 1  # joint trains one experience
    saved = stop_inside(experience, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        execute(load("quickstart_continual", overrides))
    monkeypatch.undo()
    stopped = sorted(Path(out_dir.split("=", 1)[1]).iterdir())[-1]
    assert (stopped / "checkpoints" / checkpoint.WITHIN).is_file()
    assert saved == [1]  # stopped after the experience's first epoch
    capsys.readouterr()

    trained = count_epochs(monkeypatch)
    assert main(["run", "--resume", str(stopped)]) == 0
    # the resumed run's first epoch is the interrupted experience's second, not its first
    assert trained[0] == (experience, 2)
    err = capsys.readouterr().err
    assert "continuing experience" in err and "after its epoch 1" in err
    resumed = _summary(stopped)
    assert without_times(resumed["metrics"]) == without_times(whole["metrics"])
    assert not (stopped / "checkpoints" / checkpoint.WITHIN).exists()  # the run saved whole


def count_epochs(monkeypatch) -> list[tuple[int, int]]:
    """(experience, epochs done in it) after every epoch the strategy trains from now on."""
    from paralab.strategies.continual import engine

    after, seen = engine.WithinExperience._after_training_epoch, []

    def record(self, **kwargs):
        after(self, **kwargs)
        seen.append((self.clock.train_exp_counter, self.clock.train_exp_epochs))

    monkeypatch.setattr(engine.WithinExperience, "_after_training_epoch", record)
    return seen


def test_a_within_file_left_from_an_earlier_experience_is_ignored(tmp_path):
    import torch

    torch.save(
        {"format": checkpoint.FORMAT, "experience": 0, "epochs": 1}, tmp_path / checkpoint.WITHIN
    )
    assert checkpoint.load_within(tmp_path, 1) is None
    assert checkpoint.load_within(tmp_path, 0)["epochs"] == 1


def _summary(folder: Path) -> dict:
    import json

    return json.loads((folder / "summary.json").read_text())
