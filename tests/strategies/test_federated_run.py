"""Short simulations on a local Ray (digits, 4 clients): learning, crashes, resume, total failure.

One reference run (4 rounds, a quarter of the clients crashing each round) serves three checks:
accuracy improves, crashes are counted, and an interrupted + resumed run ends identically.
"""

import csv
import json
from pathlib import Path

import pytest

import paralab
from paralab.cli import main
from tests.processes import StopAfterRound, no_ray_left, stable

OVERRIDES = [
    "tracking.wandb=disabled",
    "paradigm.num_clients=4",
    "paradigm.rounds=4",
    "paradigm.ray_num_cpus=2",
    "paradigm.fraction_evaluate=0.5",
    "paradigm.faults.crash_fraction=0.25",
]


def rows(run_dir: str | Path) -> list[dict]:
    with (Path(run_dir) / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("fl")
    return paralab.run("quickstart_federated", [*OVERRIDES, f"output_dir={out}"])


def test_a_short_simulation_learns_and_logs_every_round(reference):
    metrics = reference["metrics"]
    log = rows(reference["run_dir"])
    first = next(float(r["test/acc"]) for r in log if r.get("test/acc") and r["step"] == "0")
    assert metrics["test/acc"] > first + 0.3
    assert metrics["rounds"] == 4
    per_round = [r for r in log if r.get("clients/sampled")]
    assert len(per_round) == 4
    for key in ("bytes/up", "bytes/down", "time/round_s", "fed/eval_acc", "test/loss"):
        assert all(r.get(key) for r in per_round), key
    run_dir = Path(reference["run_dir"])
    assert (run_dir / "client_histograms.png").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert no_ray_left()


def test_crashing_clients_are_counted_and_the_run_goes_on(reference):
    metrics = reference["metrics"]
    assert metrics["clients/failed_total"] > 0
    assert metrics["clients/succeeded_total"] + metrics["clients/failed_total"] == 16


def test_resume_continues_from_the_last_round_with_the_same_metrics(reference, tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        paralab.run("quickstart_federated", [*OVERRIDES, f"output_dir={tmp_path}"],
                    callbacks=[StopAfterRound(2)])  # fmt: skip
    assert no_ray_left()
    stopped = next(tmp_path.iterdir())
    capsys.readouterr()
    assert main(["run", "--resume", str(stopped)]) == 0
    err = capsys.readouterr().err
    assert "round 3/4" in err and "round 1/4" not in err

    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["resumed"] is True
    assert stable(summary["metrics"]) == stable(reference["metrics"])
    # metrics.csv keeps the rows from before the interruption: every round once, in order
    rounds = [r["step"] for r in rows(stopped) if r.get("clients/sampled")]
    assert rounds == ["1", "2", "3", "4"]
    assert no_ray_left()


def test_a_run_where_every_client_fails_exits_non_zero(tmp_path, capsys):
    code = main(["run", "quickstart_federated", *OVERRIDES, "paradigm.rounds=3",
                 "paradigm.faults.crash_fraction=1.0", "paradigm.abort_after_failed_rounds=2",
                 f"output_dir={tmp_path}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "every client failed in 2 round(s) in a row" in err
    assert "Traceback" not in err
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert no_ray_left()
