"""Federated continual runs on a local Ray (digits, 4 clients, 2 experiences of 5 classes, 2
rounds each): per-client replay state that persists and is used after the switch, the accuracy
matrix, resume in the middle of a phase, asynchronous orders, and the config errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import paralab
from paralab.cli import main
from tests.processes import StopAfterRound, no_ray_left, stable

OVERRIDES = ["tracking.wandb=disabled", "paradigm.ray_num_cpus=2", "trainer.progress_bar=false"]
REPLAY = [*OVERRIDES, "paradigm.client_eval=true"]


def rows(run_dir: str | Path) -> list[dict]:
    with (Path(run_dir) / "metrics.csv").open() as f:
        return [r for r in csv.DictReader(f) if r.get("clients/sampled")]


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fcl")
    return paralab.run("quickstart_federated_continual", [*REPLAY, f"output_dir={out}"])


def test_each_client_keeps_its_replay_buffer_across_rounds_and_uses_it_after_the_switch(
    replay_run,
):
    log = rows(replay_run["run_dir"])
    assert [int(r["step"]) for r in log] == [1, 2, 3, 4]
    buffer = [round(float(r["train/buffer_size"]), 6) for r in log]  # a weighted mean
    replayed = [float(r["train/replayed"]) for r in log]
    assert buffer[0] == buffer[1] == 100  # mem_size, all of experience 0
    assert buffer[2] == buffer[3] == 100  # 50 of each experience once two are seen
    assert replayed[:2] == [0.0, 0.0] and replayed[2] > 0 and replayed[3] > 0
    assert all(float(r["bytes/client_state_up"]) > 0 for r in log)
    assert float(log[0]["bytes/client_state_down"]) < float(log[1]["bytes/client_state_down"])
    assert replay_run["metrics"]["memory/client_state_bytes_max"] > 0
    assert no_ray_left()


def test_the_accuracy_matrix_has_a_row_per_phase_and_the_diagonal_learned(replay_run):
    run_dir = Path(replay_run["run_dir"])
    saved = json.loads((run_dir / "accuracy_matrix.json").read_text())
    matrix = saved["matrix"]
    assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
    assert matrix[0][0] > 0.8 and matrix[0][1] < 0.2  # experience 1's classes are unseen
    assert matrix[1][1] > 0.8
    metrics = replay_run["metrics"]
    assert metrics["test/acc"] == pytest.approx(sum(matrix[1]) / 2)
    assert metrics["forgetting"] == pytest.approx(matrix[0][0] - matrix[1][0])
    assert (run_dir / "accuracy_matrix.png").is_file()
    schedule = json.loads((run_dir / "schedule.json").read_text())
    assert [c["order"] for c in schedule["clients"]] == [[0, 1]] * 4
    assert replay_run["strategy"] == "fedavg+replay"


def test_each_clients_own_model_is_scored_on_what_it_has_seen(replay_run):
    rows = json.loads((Path(replay_run["run_dir"]) / "client_matrices.json").read_text())
    assert sorted(rows) == ["0", "1", "2", "3"]
    for client in rows.values():
        assert [sorted(row) for row in client] == [["0"], ["0", "1"]]
        assert client[0]["0"] > 0.8  # its model after experience 0, on experience 0
    metrics = replay_run["metrics"]
    assert metrics["clients/forgetting_max"] >= 0 and "clients/forgetting_mean" in metrics


def test_resume_in_the_middle_of_a_phase_ends_with_the_same_metrics(replay_run, tmp_path):
    with pytest.raises(KeyboardInterrupt):  # after round 3: the first round of phase 2
        paralab.run("quickstart_federated_continual", [*REPLAY, f"output_dir={tmp_path}"],
                    callbacks=[StopAfterRound(3)])  # fmt: skip
    assert no_ray_left()
    (stopped,) = tmp_path.iterdir()
    assert main(["run", "--resume", str(stopped)]) == 0
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["resumed"] is True
    assert stable(summary["metrics"]) == pytest.approx(stable(replay_run["metrics"]))
    assert no_ray_left()


def test_an_async_schedule_gives_each_client_its_own_order(tmp_path):
    result = paralab.run(
        "quickstart_federated_continual",
        [*OVERRIDES, "paradigm.schedule=async", "paradigm.n_experiences=3",
         "paradigm.rounds_per_task=1", "paradigm.method=ewc", "paradigm.local_epochs=1",
         "paradigm.faults.crash_fraction=0.25", "paradigm.min_train_clients=4",
         f"output_dir={tmp_path}"],
    )  # fmt: skip
    run_dir = Path(result["run_dir"])
    orders = [c["order"] for c in json.loads((run_dir / "schedule.json").read_text())["clients"]]
    assert orders[0] == [0, 1, 2] and all(sorted(o) == [0, 1, 2] for o in orders)
    assert len({tuple(o) for o in orders}) > 1
    log = rows(run_dir)
    assert [float(r["train/experience"]) for r in log] != [0.0, 1.0, 2.0]  # a mean over clients
    matrix = json.loads((run_dir / "accuracy_matrix.json").read_text())["matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert result["metrics"]["clients/failed_total"] > 0  # crashed clients: the run goes on
    assert result["strategy"] == "fedavg+ewc"
    assert no_ray_left()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["paradigm.rounds=5"], "rounds_per_task x n_experiences = 2 x 2 = 4"),
        (["paradigm.fraction_evaluate=0.5"], "paradigm.fraction_evaluate=0.5"),
        (["paradigm.eval_subset=100"], "paradigm.eval_subset"),
        (["paradigm.method=si"], "paradigm.method"),
        (["paradigm.scenario=task"], "paradigm.scenario"),
        (["paradigm.n_experiences=11"], "exceeds the dataset's 10 classes"),
        (["paradigm.server_method=prototypes", "paradigm.strategy=fedadam"], "fedadam"),
        (["paradigm.num_clients=1000", "paradigm.min_train_clients=2"], "at least 1000"),
    ],
)
def test_impossible_settings_fail_before_a_run_folder_exists(refuses, overrides, message):
    refuses("quickstart_federated_continual", [*OVERRIDES, *overrides], message)
