"""`kill -9` in the middle of an epoch, then `paralab run --resume`: the finished epochs are kept
(not trained again), metrics.csv holds every epoch once, and the run ends as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import paralab
from tests.conftest import FAST

EPOCHS = 6
OVERRIDES = [*FAST, f"trainer.max_epochs={EPOCHS}", "data.train_limit=400", "model.dropout=0.3"]

# The run to kill: it announces the third epoch's fourth batch, then waits there to be killed.
STALL = textwrap.dedent(
    """
    import sys, time
    import lightning as L
    import paralab

    class Stall(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 2 and batch_idx == 3:
                print("stalled in epoch 3", file=sys.stderr, flush=True)
                time.sleep(600)

    paralab.run("quickstart_offline", sys.argv[1:], callbacks=[Stall()])
    """
)


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def test_resume_after_kill_9_mid_epoch_keeps_history_and_skips_finished_epochs(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    killed = subprocess.Popen(
        [sys.executable, "-c", STALL, *OVERRIDES, f"output_dir={runs}"],
        stderr=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    seen = []
    try:
        for line in killed.stderr:
            seen.append(line)
            if "stalled in epoch 3" in line:
                break
        assert any(line.startswith(f"epoch 2/{EPOCHS}") for line in seen), "".join(seen)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=60)
    folder = next(runs.iterdir())
    assert not (folder / "summary.json").exists()  # killed: nothing was recorded at the end

    cmd = [sys.executable, "-m", "paralab", "run", "--resume", str(folder)]
    resumed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs = [line.split()[1] for line in resumed.stderr.splitlines() if line.startswith("epoch ")]
    assert epochs == [f"{e}/{EPOCHS}" for e in range(3, EPOCHS + 1)]  # only the rest is trained

    history = rows(folder)
    for column in ("train/loss", "val/acc"):
        logged = [int(r["epoch"]) for r in history if r[column]]
        assert logged == list(range(EPOCHS)), column  # every epoch once: none lost, none twice
    # the uninterrupted run, in a process set up the same way (thread count changes the floats)
    cmd = [sys.executable, "-m", "paralab", "run", "quickstart_offline", *OVERRIDES,
           f"output_dir={tmp_path / 'ref'}"]  # fmt: skip
    straight = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = Path(straight.stdout.strip().splitlines()[-1])
    assert history == rows(reference)
    final = paralab.resume(folder)["metrics"]  # completed: returns the summary, trains nothing
    expected = json.loads((reference / "summary.json").read_text())["metrics"]
    assert {k: v for k, v in final.items() if not k.startswith(("time/", "memory/"))} == {
        k: v for k, v in expected.items() if not k.startswith(("time/", "memory/"))
    }
