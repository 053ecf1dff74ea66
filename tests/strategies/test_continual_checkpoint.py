"""Continual checkpoints hold data only, and every method resumes exactly from one.

Each strategy and plugin keeps its memory differently (buffers, importances, model copies), so
each is resumed from the checkpoint written after the second of three experiences and must end
with the metrics of the uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from paralab.cli import main
from paralab.platform.config import load
from paralab.platform.divergence import DivergedError
from paralab.platform.runner import execute, resume
from paralab.platform.tracking import write_json
from paralab.strategies.continual import checkpoint
from paralab.strategies.continual.methods import PLUGINS, STRATEGIES

TINY = [
    "trainer.max_epochs=1",
    "trainer.num_threads=1",
    "tracking.wandb=disabled",
    "data.train_limit=300",
    "paradigm.n_experiences=3",
    "paradigm.mem_size=40",
    "paradigm.patterns_per_exp=20",
    "paradigm.agem_sample_size=20",
]
METHODS = [[f"paradigm.strategy={s}", f"paradigm.scenario={m.scenarios[0]}"]
           for s, m in sorted(STRATEGIES.items())]  # fmt: skip
METHODS += [[f"paradigm.plugins=[{p}]"] for p in sorted(PLUGINS)]
METHODS += [["paradigm.strategy=replay", "data.augment=[crop]", "model.dropout=0.3"]]


def learned(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("train_time")}


@pytest.mark.parametrize("overrides", METHODS, ids=lambda o: "+".join(x.split("=")[1] for x in o))
def test_every_method_resumes_from_its_checkpoint_with_the_uninterrupted_metrics(
    overrides, tmp_path, monkeypatch
):
    saved: dict[int, Path] = {}
    save = checkpoint.save

    def keep_each(folder, strategy, progress):  # a copy of every checkpoint the run writes
        save(folder, strategy, progress)
        copy = tmp_path / f"after{progress.next_experience}.pt"
        shutil.copy(folder / checkpoint.FILE, copy)
        saved[progress.next_experience] = copy

    monkeypatch.setattr(checkpoint, "save", keep_each)
    whole = execute(load("quickstart_continual", [*TINY, *overrides, f"output_dir={tmp_path}"]))
    monkeypatch.setattr(checkpoint, "save", save)
    if 2 not in saved:  # joint training: one step, its checkpoint is the end
        return
    folder = Path(whole["run_dir"])  # as if the run had stopped after the second experience
    shutil.copy(saved[2], folder / "checkpoints" / checkpoint.FILE)
    write_json(folder / "summary.json", {**whole, "status": "interrupted"})

    resumed = resume(folder)
    assert resumed["resumed"] is True
    assert learned(resumed["metrics"]) == learned(whole["metrics"])


def test_the_checkpoint_holds_only_tensors_and_plain_values(out_dir):
    summary = execute(load("quickstart_continual", [*TINY, "paradigm.strategy=replay", out_dir]))
    path = Path(summary["run_dir"]) / "checkpoints" / checkpoint.FILE
    payload = torch.load(path, weights_only=True)  # refuses any other object
    kinds = set()

    def walk(value):
        kinds.add(type(value).__name__)
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k)
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(payload)
    assert kinds <= {"dict", "list", "tuple", "str", "int", "float", "bool", "NoneType", "Tensor"}
    assert payload["format"] == checkpoint.FORMAT


def test_a_checkpoint_that_does_not_fit_the_strategy_is_a_clear_error(out_dir, capsys):
    summary = execute(load("quickstart_continual", [*TINY, "paradigm.strategy=replay", out_dir]))
    folder = Path(summary["run_dir"])
    path = folder / "checkpoints" / checkpoint.FILE
    payload = torch.load(path, weights_only=True)
    payload["strategy"]["model"]["tensors"].popitem()  # a parameter short
    torch.save(payload, path)
    write_json(folder / "summary.json", {**summary, "status": "interrupted"})
    capsys.readouterr()
    assert main(["run", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "does not fit" in err and "Delete it" in err
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"


def test_a_diverging_continual_run_fails_naming_the_experience(out_dir):
    config = load("quickstart_continual", [*TINY, "optim.lr=1e30", out_dir])
    with pytest.raises(DivergedError, match="experience 1/3"):
        execute(config)
    folder = next(Path(out_dir.split("=", 1)[1]).iterdir())
    text = (folder / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert summary["status"] == "failed"
    assert not (folder / "checkpoints" / checkpoint.FILE).exists()  # nothing diverged is saved


def test_resuming_a_completed_continual_run_trains_nothing(out_dir, capsys):
    summary = execute(load("quickstart_continual", [*TINY, out_dir]))
    folder = Path(summary["run_dir"])
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["run", "--resume", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "completed earlier" in err and "experience" not in err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
