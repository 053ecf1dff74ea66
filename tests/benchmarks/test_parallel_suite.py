"""``paralab bench <suite> --parallel N``: runs side by side on Ray, each its own process.

A parallel suite gives each run the metrics the sequential suite gives it; a run killed in the
middle becomes a ``failed`` row while the others complete (and a run that starts from it is
skipped); ``--resume`` finishes both; runs spread over the nodes of a Ray cluster.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import paralab
from paralab.benchmarks.live import LiveTable, RunState
from paralab.benchmarks.suite import SuiteIncompleteError
from paralab.cli import main
from tests.processes import read_lines, session_processes, wait_for

QUICK = ["trainer.max_epochs=1", "trainer.progress_bar=false", "tracking.wandb=disabled"]
TINY = """
description: a supervised, a continual and a federated run
overrides: [trainer.max_epochs=1, trainer.progress_bar=false, tracking.wandb=disabled,
            trainer.num_threads=1]
runs:
  - {name: offline, experiment: quickstart_offline}
  - {name: naive, experiment: quickstart_continual, overrides: [paradigm.epochs=1]}
  - name: fedavg
    experiment: quickstart_federated
    overrides: [paradigm.rounds=2, paradigm.fraction_evaluate=0]
compare: {metric: test/acc, columns: [test/acc]}
"""
CHAIN = """
description: a slow run, a quick one, and one that starts from the slow one
overrides: [trainer.progress_bar=false, tracking.wandb=disabled]
runs:
  - {name: slow, experiment: quickstart_offline, overrides: [trainer.max_epochs=60]}
  - {name: quick, experiment: quickstart_offline, overrides: [trainer.max_epochs=1]}
  - name: after
    experiment: quickstart_offline
    overrides: [trainer.max_epochs=1, model.init_from=@slow]
compare: {metric: test/acc, columns: [test/acc]}
"""


@pytest.fixture
def suites(tmp_path, monkeypatch):
    layer = tmp_path / "configs"
    (layer / "benchmark").mkdir(parents=True)
    (layer / "benchmark" / "tiny.yaml").write_text(TINY)
    (layer / "benchmark" / "chain.yaml").write_text(CHAIN)
    monkeypatch.setenv("PARALAB_CONFIG_DIR", str(layer))
    return tmp_path


def rows(folder: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads((folder / "comparison.json").read_text())["rows"]}


def metrics(row: dict) -> dict:
    summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
    return {k: v for k, v in summary["metrics"].items() if "time" not in k and "memory" not in k}


def test_parallel_runs_give_the_sequential_metrics(suites):
    """To the bit, with the same torch threads (a parallel run's threads follow its CPUs, here
    1, and other thread counts change losses in the 7th digit)."""
    sequential = paralab.bench("tiny", output_dir=str(suites / "seq"))
    parallel = paralab.bench("tiny", output_dir=str(suites / "par"), parallel=2)
    one, two = rows(sequential), rows(parallel)
    assert sorted(two) == ["fedavg", "naive", "offline"]
    for name in one:
        assert two[name]["status"] == "completed"
        assert metrics(two[name]) == metrics(one[name]), name
    assert two["fedavg"]["test/acc"] > 0.5
    assert json.loads((parallel / "suite.json").read_text())["parallel"] == 2
    for name in one:  # each run's output is kept, and its folder is in the suite folder
        assert "test/acc" in (parallel / "logs" / f"{name}.log").read_text()
        assert Path(two[name]["run_dir"]).parent == parallel
    assert not psutil.Process().children(recursive=True)  # the suite's Ray is gone


def kill_when_running(run: str, root: Path) -> threading.Thread:
    """SIGKILL the process of ``run`` (``paralab run ... name=<run>``) once it has saved a
    checkpoint under ``root`` (its run folder's ``checkpoints/last.ckpt``): what the OOM
    killer or a crash does to a run that has something to resume from. A fixed delay instead
    killed a slow machine's run before its folder existed."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for proc in psutil.process_iter(["cmdline"]):
                if f"name={run}" in (proc.info["cmdline"] or []):
                    while time.monotonic() < deadline:
                        if any(root.glob(f"bench/*/{run}-*/checkpoints/last.ckpt")):
                            proc.send_signal(signal.SIGKILL)
                            return
                        time.sleep(0.1)
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_killed_run_is_a_failed_row_the_others_complete_and_resume_finishes(suites):
    killer = kill_when_running("slow", suites)
    with pytest.raises(SuiteIncompleteError, match=r"2 of 3 runs did not complete \(slow, after\)"):
        paralab.bench("chain", output_dir=str(suites), parallel=2)
    killer.join()
    folder = next((suites / "bench").iterdir())
    first = rows(folder)
    assert first["quick"]["status"] == "completed"
    assert first["slow"]["status"] == "failed"
    assert "killed by signal 9" in first["slow"]["error"]
    assert first["after"]["status"] == "skipped" and first["after"]["run_dir"] is None
    table = (folder / "comparison.md").read_text()
    assert "| failed |" in table and "- after (skipped): not run: it starts from slow" in table
    quick_summary = Path(first["quick"]["run_dir"]) / "summary.json"
    kept = quick_summary.read_text()

    assert paralab.resume_bench(folder) == folder  # in parallel again, as saved
    second = rows(folder)
    assert all(r["status"] == "completed" for r in second.values())
    assert second["slow"]["run_dir"] == first["slow"]["run_dir"]  # continued, not restarted
    assert json.loads(Path(second["slow"]["run_dir"], "summary.json").read_text())["resumed"]
    assert quick_summary.read_text() == kept
    saved = (Path(second["after"]["run_dir"]) / "config.yaml").read_text()
    assert f"init_from: {Path(second['slow']['run_dir']).resolve()}" in saved


def test_ctrl_c_interrupts_every_running_run_and_leaves_no_process(suites):
    """Ctrl-C at the terminal (SIGINT to the whole foreground group): each running run is
    interrupted once, keeps its folder as ``interrupted``, and nothing is left running."""
    out = suites / "out"
    command = [sys.executable, "-m", "paralab", "bench", "chain", "--parallel", "2",
               "--output-dir", str(out)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    try:
        stderr = read_lines(process.stderr)
        wait_for(stderr, r"slow: running", timeout=120)
        time.sleep(5)  # both runs are training
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    said = "".join(iter(lambda: stderr.get(timeout=5), None))
    assert code == 130, said
    folder = next((out / "bench").iterdir())
    assert f"finish it with: paralab bench --resume {folder}" in said
    slow = next(folder.glob("slow-*"))
    assert json.loads((slow / "summary.json").read_text())["status"] == "interrupted"
    assert not session_processes(process.pid)
    left = [
        p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])
    ]
    assert not left, [p.info["cmdline"] for p in left]


def test_runs_spread_over_the_nodes_of_a_cluster(suites, two_node_cluster):
    folder = paralab.bench(
        "tiny", QUICK, output_dir=str(suites), only=["offline", "naive"],
        ray_address=two_node_cluster,
    )  # fmt: skip
    done = rows(folder)
    assert {r["status"] for r in done.values()} == {"completed"}
    assert len({r["node"] for r in done.values()}) == 2  # one CPU per node, one per run


def test_a_federated_run_on_a_cluster_reserves_its_clients_with_it(suites, two_node_cluster):
    """Two one-CPU nodes: the federated run's own process and its one client per round take
    both, as one placement group; so the offline run never runs beside it (without the group,
    both processes started and the client waited for a CPU the offline run held)."""
    fed = TINY.replace("paradigm.fraction_evaluate=0]", "paradigm.fraction_evaluate=0, "
                       "paradigm.num_clients=2, paradigm.fraction_train=0.5, "
                       "paradigm.min_train_clients=1]")  # fmt: skip
    (suites / "configs" / "benchmark" / "fed.yaml").write_text(fed)
    folder = paralab.bench(
        "fed", [*QUICK, "trainer.max_epochs=8"], output_dir=str(suites),
        only=["offline", "fedavg"], ray_address=two_node_cluster, parallel=2,
    )  # fmt: skip
    done = rows(folder)
    assert {r["status"] for r in done.values()} == {"completed"}, done
    spans = []
    for row in done.values():
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        start = time.mktime(time.strptime(summary["started"], "%Y-%m-%dT%H:%M:%S"))
        spans.append((start, start + summary["wall_time_s"]))
    (_, first_end), (second_start, _) = sorted(spans)
    assert second_start >= first_end - 1  # one after the other ("started" is to the second)
    assert "clients in Ray placement group fed" in (folder / "logs" / "fedavg.log").read_text()
    # a group the cluster can never grant (3 clients at once) stops the suite before its folder
    out = suites / "too_big"
    with pytest.raises(paralab.ConfigError, match="reserves its own process and 3 clients"):
        paralab.bench("fed", [*QUICK, "paradigm.num_clients=3", "paradigm.fraction_train=1"],
                      output_dir=str(out), only=["fedavg"], ray_address=two_node_cluster,
                      parallel=1)  # fmt: skip
    assert not out.exists()


def test_a_ddp_run_gets_a_process_and_all_its_devices(suites):
    """Two DDP processes on CPUs stand in for two GPUs: the run asks for both cores at once."""
    ddp = "experiment: quickstart_offline, overrides: [trainer=ddp_cpu]}"
    suite = TINY.replace("experiment: quickstart_offline}", ddp)
    (suites / "configs" / "benchmark" / "ddp.yaml").write_text(suite)
    folder = paralab.bench("ddp", QUICK, output_dir=str(suites), only=["offline"], parallel=1)
    (row,) = rows(folder).values()
    assert row["status"] == "completed" and row["test/acc"] > 0.5
    log = (folder / "logs" / "offline.log").read_text()
    assert "trainer.devices" not in log  # no refusal
    saved = (Path(row["run_dir"]) / "config.yaml").read_text()
    assert "strategy: ddp" in saved and "devices: 2" in saved


def test_requests_that_fit_no_node_and_bad_counts_are_input_errors(suites, capsys):
    (suites / "configs" / "benchmark" / "gpus.yaml").write_text(
        TINY.replace("compare:", "resources: {num_gpus: 1}\ncompare:")
    )
    out = suites / "out"
    assert main(["bench", "gpus", "--parallel", "2", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        "asks for 1 CPU, 1 GPU, which no Ray node has (largest: 2 CPU, 0 GPU)".replace(
            "2 CPU", f"{os.cpu_count()} CPU"
        )
        in err
        and "Traceback" not in err
    )
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "tiny", "--parallel", "0"])
    assert exit_.value.code == 2 and "1 or more" in capsys.readouterr().err
    assert not psutil.Process().children(recursive=True)


def test_the_sequential_suite_points_multi_device_runs_to_parallel(suites, capsys):
    code = main(["bench", "tiny", "--only", "offline", "trainer.devices=2", "--output-dir",
                 str(suites / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "trainer.devices=2 needs a process of its own" in err
    assert "Add --parallel N" in err and not (suites / "out").exists()


def test_the_live_table_off_a_terminal_writes_one_line_per_change(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="paralab"):
        table = LiveTable(["a", "b"], "test/acc")
        table.set("a", RunState("running"))
        table.progress({"a": "epoch 1/5"})  # off a terminal: in the run's log, not here
        table.set("a", RunState("completed", 0.91234, wall_time_s=12.4))
        table.set("b", RunState("failed", note="exit code 1"))
        table.close()
    assert caplog.messages == [
        "[1/2] a: running",
        "[1/2] a: completed, test/acc 0.9123 (12 s)",
        "[2/2] b: failed: exit code 1",
        "suite: 1 completed, 1 failed",
    ]


def test_the_live_table_on_a_terminal_redraws_in_place():
    class Terminal:
        text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    term = Terminal()
    table = LiveTable(["a", "b"], "test/acc", stream=term)
    table.set("a", RunState("running"))
    table.progress({"a": "epoch 1/5, val/acc 0.80"})
    frames = term.text.split("\x1b[3F")  # two rows and the tally, redrawn from the top
    assert len(frames) == 3
    assert "a  running 0 s: epoch 1/5, val/acc 0.80" in frames[-1]
    assert "b  queued" in frames[-1] and "-- 1 running, 1 queued" in frames[-1]
