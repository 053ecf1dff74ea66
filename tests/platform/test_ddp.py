"""Data-parallel training on the CPU: Lightning DDP with two gloo processes, from the CLI."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path


def test_two_process_ddp_run_writes_one_run_folder(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "paralab", "run", "quickstart_offline", "trainer=ddp_cpu",
           "trainer.max_epochs=2", f"output_dir={tmp_path}"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = list(tmp_path.iterdir())
    assert len(run_dirs) == 1
    assert result.stdout.strip().splitlines()[-1] == str(run_dirs[0])
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    assert summary["metrics"]["world_size"] == 2
    n_train, batch = 1294, 64
    assert summary["metrics"]["steps"] == 2 * math.ceil(math.ceil(n_train / 2) / batch)
    assert summary["metrics"]["test/acc"] > 0.5
    assert Path(run_dirs[0] / "checkpoints" / "last.ckpt").is_file()
