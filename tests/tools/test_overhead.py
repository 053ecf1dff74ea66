"""The developer overhead measurements (tools/overhead/) on the smallest settings: digits, one or
two repeats, two epochs or rounds. Each must run and give finite positive figures; the continual
one must also train both sides to the same accuracy (same weights, same batches)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch

from tools.overhead import continual, federated
from tools.overhead.common import alternating, ratio_stats

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The scripts set torch's thread count for their process; give it back to the session."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_supervised_runs_as_documented_from_the_repository_root(tmp_path):
    out = tmp_path / "supervised.json"
    args = ["--repeats", "1", "--epochs", "2", "--output", str(out), "data=digits"]
    result = subprocess.run([sys.executable, "-m", "tools.overhead.supervised", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "paralab/plain: median" in result.stdout
    figures = json.loads(out.read_text())
    (row,) = figures["rows"]
    assert positive(row["plain_s"]) and positive(row["paralab_s"])
    assert row["paralab/plain"] == pytest.approx(row["paralab_s"] / row["plain_s"])
    assert positive(figures["summary"]["paralab/plain"]["median"])


def test_continual_trains_both_sides_alike_and_gives_ratios(tmp_path, capsys):
    out = tmp_path / "continual.json"
    args = ["--repeats", "2", "--train-limit", "0", "--test-limit", "0", "--output", str(out)]
    assert continual.main([*args, "data=digits"]) == 0
    assert "split digits, 5 x 2 classes" in capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert len(figures["rows"]) == 2  # the second repeat runs the other way round
    for row in figures["rows"]:
        assert row["naive"]["final_acc"] == pytest.approx(row["plain"]["final_acc"], abs=1e-6)
        assert 0 < row["plain"]["final_acc"] <= 1 and 0 < row["stock"]["final_acc"] <= 1
        for key in ("naive/plain wall", "naive/plain cpu", "stock/plain cpu+eval"):
            assert positive(row[key]), key
    assert positive(figures["summary"]["naive/plain cpu"]["median"])


def test_federated_measures_a_warm_round_and_leaves_no_ray_behind(tmp_path):
    out = tmp_path / "federated.json"
    federated.main(["--sizes", "40", "--clients", "2", "--rounds", "2", "--repeats", "1",
                    "--output", str(out), "data=digits"])  # fmt: skip
    figures = json.loads(out.read_text())
    (row,) = figures["rows"]
    assert row["samples_per_client"] == 40 and row["clients_per_round"] == 2
    for key in ("warm_round_s", "ideal_parallel_s", "ratio", "ratio_vs_in_actor_compute"):
        assert positive(row[key]), key
    assert row["ratio"] == pytest.approx(row["warm_round_s"] / row["ideal_parallel_s"])
    assert figures["summary"]["40"]["median"] == row["ratio"]
    assert not psutil.Process().children(recursive=True)


def test_federated_beside_plain_flower_measures_both_against_the_same_ideal(tmp_path):
    out = tmp_path / "federated.json"
    federated.main(["--plain-flower", "--sizes", "40", "--clients", "2", "--rounds", "2",
                    "--repeats", "1", "--output", str(out), "data=digits"])  # fmt: skip
    figures = json.loads(out.read_text())
    (row,) = figures["rows"]
    for key in ("flower_warm_round_s", "flower_ratio", "flower_to_round1_s", "to_round1_s",
                "flower_run_wall_s", "flower_process_wall_s"):  # fmt: skip
        assert positive(row[key]), key
    assert row["flower_ratio"] == pytest.approx(
        row["flower_warm_round_s"] / row["ideal_parallel_s"]
    )
    assert figures["summary"]["40"]["flower_ratio"]["median"] == row["flower_ratio"]
    assert not psutil.Process().children(recursive=True)


def test_federated_warm_start_up_is_measured_on_one_engine_beside_plain_flower(tmp_path):
    out = tmp_path / "warm.json"
    federated.main(["--warm", "2", "--sizes", "40", "--clients", "2", "--rounds", "2",
                    "--repeats", "1", "--output", str(out), "data=digits"])  # fmt: skip
    figures = json.loads(out.read_text())
    cold, warm = figures["rows"]
    assert (cold["engine"], warm["engine"]) == ("cold", "warm")
    for row in (cold, warm):
        for key in ("startup_s", "first_round_s", "to_round1_s", "flower_to_round1_s"):
            assert positive(row[key]), key
        assert row["to_round1_s"] == pytest.approx(row["startup_s"] + row["first_round_s"])
    assert warm["to_round1_s"] < cold["to_round1_s"]  # Ray and the workers were up
    assert figures["summary"]["40 warm"]["to_round1_s"]["median"] == warm["to_round1_s"]
    assert not psutil.Process().children(recursive=True)


def test_federated_end_to_end_times_both_whole_runs_in_processes_of_their_own(tmp_path):
    out = tmp_path / "e2e.json"
    federated.main(["--end-to-end", "--e2e-clients", "4", "--clients", "2", "--e2e-rounds",
                    "2", "--sizes", "40", "--repeats", "1", "--output", str(out),
                    "data=digits"])  # fmt: skip
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["clients"], row["per_round"], row["rounds"], row["scheme"]) == (4, 2, 2, "iid")
    for key in ("paralab_wall_s", "flower_wall_s", "paralab_warm_round_s", "flower_warm_round_s"):
        assert positive(row[key]), key
    assert row["wall_ratio"] == pytest.approx(row["paralab_wall_s"] / row["flower_wall_s"])
    assert not psutil.Process().children(recursive=True)


def test_federated_scale_check_samples_the_memory_of_the_process_tree(tmp_path):
    out = tmp_path / "scale.json"
    federated.main(["--scale", "--scale-clients", "20", "--rounds", "2", "--repeats", "1",
                    "--output", str(out), "data=digits"])  # fmt: skip
    (row,) = json.loads(out.read_text())["rows"]
    assert row["clients"] == 20 and row["per_round"] == 10
    assert positive(row["warm_round_s"])
    assert 0 < row["peak_pss_gb"] <= row["peak_rss_sum_gb"]
    assert not psutil.Process().children(recursive=True)


def test_parallel_floor_times_one_loop_alone_and_two_at_once(tmp_path):
    from tools.overhead import parallel_floor

    out = tmp_path / "floor.json"
    parallel_floor.main(["--sizes", "40", "--rounds", "1", "--repeats", "1", "--output",
                         str(out), "data=digits"])  # fmt: skip
    (row,) = json.loads(out.read_text())["rows"]
    assert positive(row["alone_ms"]) and len(row["at_once_ms"]) == 2
    assert row["slowdown"] == pytest.approx(sum(row["at_once_ms"]) / 2 / row["alone_ms"])
    assert not psutil.Process().children(recursive=True)


def test_repeats_alternate_and_ratios_must_be_finite_and_positive():
    order: list[str] = []
    runs = {name: (lambda name=name: order.append(name) or name.upper()) for name in "abc"}
    assert alternating(runs, 0) == {"a": "A", "b": "B", "c": "C"}
    assert alternating(runs, 1) == {"a": "A", "b": "B", "c": "C"}
    assert order == ["a", "b", "c", "c", "b", "a"]
    assert ratio_stats([1.0, 3.0]) == pytest.approx(
        {"median": 2.0, "mean": 2.0, "stdev": math.sqrt(2), "min": 1.0, "max": 3.0, "repeats": 2}
    )
    for broken in ([], [1.0, 0.0], [float("nan")], [float("inf")]):
        with pytest.raises(ValueError):
            ratio_stats(broken)


def test_federated_cpu_split_accounts_for_the_round(tmp_path):
    from tools.overhead import federated_cpu

    out = tmp_path / "cpu.json"
    federated_cpu.main(["--per-client", "40", "--clients", "2", "--rounds", "4", "--from", "2",
                        "--output", str(out), "data=digits"])  # fmt: skip
    (row,) = json.loads(out.read_text())["rows"]
    assert row["actors"] > 0 and row["driver"] > 0 and row["round_wall_s"] > 0
    busy = sum(row[k] for k in ("driver", "actors", "raylet", "gcs", "other"))
    assert busy < 1.5 * row["available_cpu_s"] + 0.05  # CPU a round spends fits the cores it had
    assert not psutil.Process().children(recursive=True)
