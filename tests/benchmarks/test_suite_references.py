"""Suites whose runs start from earlier runs (``model.init_from=@pretrain``) and the label
curve over them: references resolve to the earlier run's folder (on ``--resume`` too), and a
reference that cannot resolve, or a backbone that would not fit, stops the suite before its
first run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from paralab.benchmarks.compare import group_label
from paralab.benchmarks.references import Reference, deferred, references
from paralab.cli import main

QUICK = ["trainer.max_epochs=1", "trainer.num_threads=1", "trainer.progress_bar=false",
         "tracking.wandb=disabled", "model.channels=[8,16]"]  # fmt: skip
LABELS = {
    "description": "pretrain on every label, then fine-tune on a few",
    "overrides": QUICK,
    "runs": [
        {"name": "pretrain", "experiment": "quickstart_offline"},
        {"name": "scratch-10", "experiment": "quickstart_offline",
         "overrides": ["data.label_fraction=0.1"]},
        {"name": "pretrain-10", "experiment": "quickstart_offline",
         "overrides": ["model.init_from=@pretrain", "data.label_fraction=0.1"]},
        {"name": "pretrain-50", "experiment": "quickstart_offline",
         "overrides": ["model.init_from=@pretrain", "data.label_fraction=0.5"]},
    ],
    "compare": {"metric": "test/acc", "columns": ["test/acc"], "curve": None,
                "label_curve": {"x": "data.label_fraction", "group": "model.init_from"}},
}  # fmt: skip


@pytest.fixture
def suites(tmp_path, monkeypatch):
    """Write suite files into a user config layer; returns the writer."""
    layer = tmp_path / "configs"
    (layer / "benchmark").mkdir(parents=True)
    monkeypatch.setenv("PARALAB_CONFIG_DIR", str(layer))

    def write(name: str, suite: dict) -> str:
        (layer / "benchmark" / f"{name}.yaml").write_text(yaml.safe_dump(suite))
        return name

    return write


def with_runs(*runs: dict) -> dict:
    return {**LABELS, "runs": list(runs)}


def run_of(name: str, *overrides: str) -> dict:
    return {"name": name, "experiment": "quickstart_offline", "overrides": list(overrides)}


def test_references_are_parsed_and_deferred():
    overrides = ["model.init_from=@pretrain", "+probe.run=@a", "seed=1", "name=x@y"]
    assert references(overrides) == [Reference("model.init_from", "pretrain"),
                                     Reference("probe.run", "a")]  # fmt: skip
    assert deferred(overrides) == ["model.init_from=null", "+probe.run=null", "seed=1", "name=x@y"]
    assert references(["model.init_from=@pretrain", "model.init_from=/a/run"]) == []  # user's
    assert group_label(None) == "none"
    assert group_label("/runs/bench/s-20260101-000000/pretrain-20260101-000001-2") == "pretrain"
    assert group_label("/x/pretrain-20260101-000001/checkpoints/last.ckpt") == "pretrain"
    assert group_label("cnn") == "cnn"


def test_label_curve_over_runs_that_start_from_an_earlier_run_and_resume(suites, tmp_path):
    name = suites("labels", LABELS)
    assert main(["bench", name, "--output-dir", str(tmp_path / "out")]) == 0
    folder = next((tmp_path / "out" / "bench").iterdir())
    comparison = json.loads((folder / "comparison.json").read_text())
    rows = {r["name"]: r for r in comparison["rows"]}
    assert all(r["status"] == "completed" for r in rows.values())
    pretrain = Path(rows["pretrain"]["run_dir"])
    tuned = Path(rows["pretrain-50"]["run_dir"])
    saved = yaml.safe_load((tuned / "config.yaml").read_text())
    assert saved["model"]["init_from"] == str(pretrain.resolve())

    curve = comparison["label_curve"]
    assert curve["x"] == "data.label_fraction" and curve["metric"] == "test/acc"
    lines = curve["lines"]
    assert sorted(lines) == ["none", "pretrain"]
    assert [x for x, _ in lines["none"]] == [0.1, 1.0]  # scratch-10, and pretrain (all labels)
    assert [x for x, _ in lines["pretrain"]] == [0.1, 0.5]
    assert lines["pretrain"][1][1] == rows["pretrain-50"]["test/acc"]
    assert (folder / "label_curve.png").stat().st_size > 0

    # --resume: a fine-tuning run whose folder is gone runs again from the kept pretrain folder
    shutil.rmtree(tuned)
    assert main(["bench", "--resume", str(folder)]) == 0
    again = {r["name"]: r for r in json.loads((folder / "comparison.json").read_text())["rows"]}
    assert again["pretrain"]["run_dir"] == rows["pretrain"]["run_dir"]
    redone = Path(again["pretrain-50"]["run_dir"])
    # run again (its folder may take the deleted one's name: names have one-second stamps)
    assert (redone / "summary.json").is_file() and again["pretrain-50"]["status"] == "completed"
    saved = yaml.safe_load((redone / "config.yaml").read_text())
    assert saved["model"]["init_from"] == str(pretrain.resolve())


@pytest.mark.parametrize(
    ("runs", "only", "expected"),
    [
        ([run_of("tune", "model.init_from=@pretrain"), run_of("pretrain")], None,
         r"run tune: model.init_from=@pretrain names a later run.*List pretrain before tune"),
        ([run_of("tune", "model.init_from=@tune")], None, r"names the run itself"),
        ([run_of("pretrain"), run_of("tune", "model.init_from=@pretrian")], None,
         r"@pretrian names no run of the suite.*runs: pretrain, tune"),
        ([run_of("pretrain"), run_of("tune", "model.init_from=@pretrain")], "tune",
         r"--only leaves out pretrain.*--only pretrain,tune.*paralab bench --resume"),
        ([run_of("pretrain", "tracking.checkpoints=false"),
          run_of("tune", "model.init_from=@pretrain")], None,
         r"run pretrain saves no checkpoint.*tracking.checkpoints=true for pretrain"),
        ([run_of("pretrain"), run_of("tune", "model.init_from=@pretrain", "model.channels=[8,32]")],
         None, r"run tune: model.init_from=@pretrain: backbone tensor 'stages.1.0.weight'.*"
         r"cnn \(channels=\[8,16\]\), on digits; this run's is cnn \(channels=\[8,32\]\).*"
         r"Set model.channels=\[8,16\]"),
    ],
    ids=["later", "itself", "unknown", "only", "no-checkpoints", "mismatch"],
)  # fmt: skip
def test_a_reference_that_cannot_resolve_stops_the_suite_before_any_run(
    suites, tmp_path, capsys, runs, only, expected
):
    name = suites("bad", with_runs(*runs))
    out = tmp_path / "out"
    args = ["bench", name, "--output-dir", str(out), *(["--only", only] if only else [])]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert not out.exists()


def test_label_curve_runs_must_be_runs_of_the_suite(suites, tmp_path, capsys):
    curve = {"x": "data.label_fraction", "group": "model.init_from", "runs": ["pretrain-99"]}
    name = suites("curve", {**LABELS, "compare": {**LABELS["compare"], "label_curve": curve}})
    assert main(["bench", name, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "compare.label_curve.runs names pretrain-99" in err and "scratch-10" in err
    assert not (tmp_path / "out").exists()


def test_label_curve_draws_only_the_runs_it_names(tmp_path):
    from paralab.benchmarks.compare import label_curve
    from paralab.benchmarks.suite_file import LabelCurve

    summaries = []
    for run, fraction, acc in (("pretrain", None, 0.9), ("scratch-10", 0.1, 0.5)):
        folder = tmp_path / f"{run}-20261126-000000"
        folder.mkdir()
        config = {"data": {"label_fraction": fraction}, "model": {"init_from": None}}
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        summaries.append({"run": run, "run_dir": str(folder), "metrics": {"test/acc": acc}})
    every = label_curve(summaries, LabelCurve(), "test/acc")["lines"]
    assert every == {"none": [[0.1, 0.5], [1.0, 0.9]]}
    named = label_curve(summaries, LabelCurve(runs=["scratch-10"]), "test/acc")["lines"]
    assert named == {"none": [[0.1, 0.5]]}
