"""The reproduction suites check every run before any runs, run end to end at a tiny budget on
digits, and put each paper's figure beside paralab's in the comparison."""

from __future__ import annotations

from pathlib import Path

import pytest

from paralab.benchmarks.compare import load_comparison
from paralab.benchmarks.suite import load_suite, run_suite
from paralab.errors import ConfigError

TINY = ["data=digits", "tracking.wandb=disabled", "trainer.num_threads=1",
        "trainer.progress_bar=false"]  # fmt: skip


def test_three_scenarios_runs_every_method_and_scenario_on_digits(tmp_path):
    folder = run_suite("three-scenarios", [*TINY, "paradigm.iterations=5"], str(tmp_path))
    comparison = load_comparison(folder)
    rows = {r["name"]: r for r in comparison["rows"]}
    assert len(rows) == 19 and all(r["status"] == "completed" for r in rows.values())
    assert comparison["published"].startswith("van de Ven & Tolias (2019)")
    assert rows["class-icarl-2000"]["published"] == 0.9457
    assert rows["task-none"]["strategy"] == "naive" and rows["class-offline"]["strategy"] == (
        "cumulative"
    )
    table = (folder / "comparison.md").read_text()
    assert "| published test/acc |" in table.splitlines()[4]
    assert "Published figures: van de Ven" in table
    # two-way heads (task: one per pair; domain: one for every pair) against ten classes
    for name in ("task-none", "domain-none"):
        assert rows[name]["test/acc"] > 0.5
    assert rows["class-none"]["test/acc"] < 0.5  # class-incremental forgets the earlier pairs


def test_fedavg_mcmahan_checks_every_run_before_any_runs(tmp_path):
    """A setting no run can take (more shards than the digits hold) stops the suite before any
    folder exists, whichever run it is found in."""
    suite = load_suite("fedavg-mcmahan")
    assert len(suite.runs) == 36  # 9 (E, B) rows x IID / shards x CNN / 2NN
    with pytest.raises(ConfigError, match="needs at least"):
        run_suite("fedavg-mcmahan", [*TINY, "paradigm.partition.shards_per_client=100"],
                  str(tmp_path))  # fmt: skip
    assert not any(tmp_path.iterdir())


def test_fedavg_mcmahan_stops_each_run_at_its_target(tmp_path):
    overrides = [*TINY, "paradigm.target=0.3", "paradigm.rounds=8", "paradigm.ray_num_cpus=2"]
    only = ["cnn-iid-e5-b10", "2nn-shards-e1-b10"]
    folder = run_suite("fedavg-mcmahan", overrides, str(tmp_path), only=only)
    rows = {r["name"]: r for r in load_comparison(folder)["rows"]}
    cnn = rows["cnn-iid-e5-b10"]
    assert cnn["status"] == "completed" and cnn["published"] == 20
    assert cnn["rounds_to_target"] == cnn["rounds"] < 8  # stopped at the round that reached it
    assert cnn["test/acc"] >= 0.3
    table = (Path(folder) / "comparison.md").read_text()
    assert "published rounds_to_target" in table
