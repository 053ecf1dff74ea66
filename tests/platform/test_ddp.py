"""Data-parallel training on the CPU: Lightning DDP with two gloo processes, from the CLI."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest


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
    # each test image tested exactly once: Lightning's DistributedSampler would repeat some
    assert "DistributedSampler" not in result.stderr
    n_test, acc = single_process_test_accuracy(run_dirs[0])
    assert summary["metrics"]["test/images"] == n_test
    assert summary["metrics"]["test/acc"] == pytest.approx(acc, abs=1e-6)


def single_process_test_accuracy(run_dir: Path) -> tuple[int, float]:
    """The saved final model (last.ckpt) evaluated on the test split in this one process."""
    import torch

    from paralab.platform.config import load_saved
    from paralab.platform.models import InputSpec
    from paralab.platform.runner import build_model, load_data

    config = load_saved(run_dir / "config.yaml")
    data = load_data(config)
    model = build_model(config, InputSpec(data.in_channels, data.image_size, data.num_classes))
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if "model." in k})
    x, y = data.test.__getitems__(range(len(data.test)))
    with torch.no_grad():
        correct = (model.eval()(x).argmax(1) == y).sum().item()
    return len(data.test), correct / len(data.test)


DENSE = {
    "segmentation": (["quickstart_segmentation", "data.train_images=256", "data.test_images=61"],
                     ["miou", "pixel_acc"]),
    "detection": (["quickstart_detection", "data.train_images=128", "data.test_images=61"],
                  ["map", "map_50", "mar_100"]),
}  # fmt: skip


@pytest.mark.parametrize("task", sorted(DENSE))
def test_two_process_ddp_scores_every_test_image_once(tmp_path, task):
    """Segmentation's confusion matrix and detection's gathered boxes are combined across the
    two processes: the DDP figures equal the saved model's on the whole test split in one."""
    import torch

    from paralab.platform.config import load_saved
    from paralab.platform.models import InputSpec
    from paralab.platform.runner import build_model, build_task, load_data
    from paralab.platform.tasks.evaluate import evaluate

    experiment, keys = DENSE[task]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "paralab", "run", experiment[0], "trainer=ddp_cpu",
           "trainer.max_epochs=1", *experiment[1:], f"output_dir={tmp_path}"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert metrics["world_size"] == 2 and metrics["test/images"] == 61
    config = load_saved(run_dir / "config.yaml")
    data = load_data(config)
    task_ = build_task(config, data)
    model = build_model(config, InputSpec(data.in_channels, data.image_size, data.num_classes))
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if "model." in k})
    values = evaluate(task_, model, [data.test.__getitems__(range(len(data.test)))])
    for key in keys:
        assert metrics[f"test/{key}"] == pytest.approx(values[key], abs=1e-5), key
