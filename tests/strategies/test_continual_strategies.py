"""Every strategy of the method table runs a short stream end to end (a new row is tested too)."""

import json
from pathlib import Path

import pytest

from paralab.platform.config import load
from paralab.platform.runner import execute
from paralab.strategies.continual.methods import STRATEGIES
from paralab.strategies.continual.metrics import continual_metrics

SHORT = [
    "trainer.max_epochs=1",
    "trainer.num_threads=1",
    "tracking.wandb=disabled",
    "paradigm.n_experiences=3",
    "paradigm.mem_size=60",
    "paradigm.patterns_per_exp=20",
    "paradigm.agem_sample_size=20",
]


def run(out_dir: str, *overrides: str) -> dict:
    return execute(load("quickstart_continual", [*SHORT, out_dir, *overrides]))


def check_run_folder(summary: dict, n_rows: int, n_columns: int) -> list[list[float]]:
    assert summary["status"] == "completed"
    folder = Path(summary["run_dir"])
    saved = json.loads((folder / "accuracy_matrix.json").read_text())
    matrix = saved["matrix"]
    assert [len(row) for row in matrix] == [n_columns] * n_rows
    metrics = summary["metrics"]
    assert metrics["test/acc_avg"] == pytest.approx(sum(matrix[-1]) / n_columns)
    assert 0 <= metrics["test/acc"] <= 1  # class scenario: the whole test split
    assert (folder / "accuracy_matrix.png").stat().st_size > 1000
    rows = (folder / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + n_rows
    return matrix


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_learns_a_short_stream(name, out_dir):
    scenario = STRATEGIES[name].scenarios[0]
    summary = run(out_dir, f"paradigm.strategy={name}", f"paradigm.scenario={scenario}")
    metrics = summary["metrics"]
    assert summary["strategy"] == name
    if name == "joint":
        matrix = check_run_folder(summary, 1, 3)
        assert "forgetting" not in metrics
        assert metrics["test/acc"] > 0.5  # all ten digits at once
    else:
        matrix = check_run_folder(summary, 3, 3)
        expected = continual_metrics(matrix)
        assert metrics["forgetting"] == pytest.approx(expected["forgetting"])
        assert metrics["bwt"] == pytest.approx(expected["bwt"])
        assert metrics["test/acc"] > 0.2  # twice chance (10 classes) at the end of the stream
        assert sum(metrics[f"train_time_s/exp{i}"] for i in range(3)) == pytest.approx(
            metrics["train_time_s"]
        )


def test_naive_forgets_in_class_incremental_and_replay_remembers(out_dir):
    naive = run(out_dir, "trainer.max_epochs=3")["metrics"]
    replay = run(out_dir, "trainer.max_epochs=3", "paradigm.strategy=replay")["metrics"]
    assert naive["forgetting"] > 0.5  # a single head overwrites the old classes
    assert replay["test/acc"] > naive["test/acc"] + 0.2


@pytest.mark.parametrize(
    "overrides",
    [
        ["paradigm.scenario=task"],
        ["paradigm.scenario=domain", "paradigm.domain_shift=permuted"],
        ["paradigm.scenario=domain", "paradigm.domain_shift=rotated"],
        ["paradigm.plugins=[ewc,replay]"],
        ["paradigm.strategy=lwf", "paradigm.scenario=task", "paradigm.plugins=[agem]"],
    ],
    ids=["task", "permuted", "rotated", "naive+ewc+replay", "lwf+agem-task"],
)
def test_scenarios_and_plugin_combinations_run(overrides, out_dir):
    summary = run(out_dir, *overrides, "paradigm.n_experiences=2")
    matrix = check_run_folder(summary, 2, 2)
    assert summary["metrics"]["test/acc"] > 0.3  # chance: 0.1 (class, domain), 0.2 (task)
    if "paradigm.scenario=task" in overrides:
        assert min(matrix[-1]) > 0.4  # one head per task: no task is forgotten to chance
