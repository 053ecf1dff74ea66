"""The task seam's contract: every task x every paradigm x every model the task accepts runs a
short fit on tiny real data, and its metrics are present and in range.

Federated is driven here through the client and server functions a Flower round calls (a
client's ``train_client`` and ``evaluate_client``, the server's evaluation), without Ray: those
are what the seam changes, and one Ray simulation per task lives in the paradigm's own tests
(``tests/strategies/test_federated_run.py``, ``tests/strategies/test_segmentation_runs.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from paralab.platform.config import load
from paralab.platform.runner import execute
from paralab.platform.tasks import TASKS, models_for

#: Each task's tiny data, as overrides of the quickstart experiments.
DATA = {
    "classification": ["data=digits"],
    "segmentation": [
        "task=segmentation",
        "data=canvas_digits",
        "data.train_images=96",
        "data.test_images=32",
        "data.canvas_size=32",
        "data.item_size=12",
        "data.batch_size=16",
    ],
}
DATA["detection"] = [
    "task=detection",
    "data=canvas_digits_boxes",
    "data.train_images=96",
    "data.test_images=32",
    "data.canvas_size=32",
    "data.item_size=12",
    "data.batch_size=16",
]
DATA["image_text"] = [
    "task=image_text",
    "data=canvas_digits_captions",
    "data.train_images=96",
    "data.test_images=32",
    "data.canvas_size=32",
    "data.item_size=12",
    "data.batch_size=16",
]
# pretext tasks make several views per image: a quarter of the digits keeps them as quick
DATA |= {
    name: ["data=digits", "data.train_limit=300", f"task={name}"]
    for name in ("rotation", "jigsaw", "simclr")
}
DATA["colorization"] = [
    "task=colorization",
    "data=photos",
    "data.train_images=64",
    "data.test_images=32",
    "data.batch_size=16",
]
#: Small settings per model (every model a task accepts must be listed: a new one is tested).
SMALL = {
    "cnn": ["model.channels=[8,16]"],
    "mlp": ["model.hidden=[32]"],
    "fedavg_cnn": ["model.hidden=32"],
    "resnet18": [],
    "vit": ["model.dim=16", "model.depth=1", "model.heads=2", "model.patch_size=4"],
    "unet": ["model.backbone={name:cnn,channels:[8,16]}", "model.decoder_channels=[16,8]"],
    "fcn": ["model.backbone={name:cnn,channels:[8,16]}"],
    "faster_rcnn": ["model.backbone={name:cnn,channels:[8,16,32]}", "model.feature_levels=2"],
    "fcos": ["model.backbone={name:cnn,channels:[8,16,32]}", "model.feature_levels=2"],
    "detr": ["model.backbone={name:cnn,channels:[8,16,32]}", "model.feature_levels=1"],
    "clip": [
        "model.backbone={name:cnn,channels:[8,16]}",
        "model.text_width=16",
        "model.text_layers=1",
        "model.embed_dim=16",
    ],
    "segmenter": [
        "model.backbone={name:vit,dim:16,depth:1,heads:2,patch_size:4}",
        "model.decoder_depth=1",
    ],
}
PARADIGM = {
    "supervised": ["paradigm=supervised", "trainer.max_epochs=1"],
    "continual": [
        "paradigm=continual",
        "paradigm.strategy=naive",
        "paradigm.n_experiences=2",
        "trainer.max_epochs=1",
    ],
    "untrained": ["paradigm=untrained"],
}
COMMON = ["tracking.wandb=disabled", "trainer.progress_bar=false", "trainer.num_threads=1"]
PAIRS = [
    (task, model) for task in TASKS.names() for model in models_for(TASKS.get(task).obj.model_kind)
]


def config(out_dir: str, task: str, model: str, *extra: str):
    return load(
        "quickstart_offline",
        [*COMMON, out_dir, *DATA[task], f"model={model}", *SMALL[model], *extra],
    )


def test_every_model_of_every_task_has_small_settings_here():
    missing = [model for _, model in PAIRS if model not in SMALL]
    assert not missing, f"add small settings for {missing} to SMALL"


def in_range(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


@pytest.mark.parametrize("paradigm", sorted(PARADIGM))
@pytest.mark.parametrize(("task", "model"), PAIRS)
def test_task_model_paradigm_fits_and_reports_its_headline(out_dir, task, model, paradigm):
    headline = f"test/{TASKS.get(task).obj.headline}"
    summary = execute(config(out_dir, task, model, *PARADIGM[paradigm]))
    assert summary["status"] == "completed"
    assert summary["task"] == task and summary["headline"] == headline
    metrics = summary["metrics"]
    assert in_range(metrics[headline]), metrics
    folder = Path(summary["run_dir"])
    assert (folder / "predictions.png").stat().st_size > 1000
    if paradigm == "supervised":
        assert math.isfinite(metrics["test/loss"])
        assert in_range(metrics[headline.replace("test/", "val/")])
    elif paradigm == "untrained":
        assert math.isfinite(metrics["test/loss"])
        assert (folder / "checkpoints" / "last.pt").is_file()
    else:
        matrix = json.loads((folder / "accuracy_matrix.json").read_text())
        assert matrix["score"] == headline and len(matrix["matrix"]) == 2


@pytest.mark.parametrize(("task", "model"), PAIRS)
def test_federated_client_and_server_drive_the_task(out_dir, task, model):
    """A client's round (the task's loss, then its headline on the client's own images) and the
    server's evaluation of the global weights, as a Flower round calls them."""
    from flwr.app import ArrayRecord

    from paralab.strategies.federated.client import evaluate_client, train_client, worker_state

    cfg = config(out_dir, task, model, "paradigm=federated", "paradigm.num_clients=2")
    state = worker_state(f"contract-{task}-{model}", cfg.plain)
    headline = TASKS.get(task).obj.headline
    arrays = ArrayRecord(state.model.state_dict())
    trained = train_client(state, 0, 1, arrays, {})["metrics"]
    train_score = f"train_{state.task.train_score}"
    assert math.isfinite(trained["train_loss"])
    if not state.task.scores_training:  # a detector makes no detections while it trains
        assert train_score not in trained
    else:
        assert in_range(trained[train_score])
    new = ArrayRecord(train_client(state, 1, 1, arrays, {})["state"])
    judged = evaluate_client(state, 1, new)
    assert judged["num-examples"] == len(state.parts[1])
    assert math.isfinite(judged["eval_loss"]) and in_range(judged[f"eval_{headline}"])


@pytest.mark.parametrize(("task", "model"), PAIRS)
def test_a_federated_continual_client_replays_across_the_switch_for_every_task(
    out_dir, task, model
):
    """Two rounds of one client, one per experience, as the federated continual ClientApp runs
    them: the state it returns after the first is what lets it replay in the second."""
    from flwr.app import ArrayRecord

    from paralab.strategies.federated.client import worker_state
    from paralab.strategies.federated_continual.client import (
        schedule_for,
        train_continual_client,
    )

    scenarios = TASKS.get(task).obj.scenarios
    scenario = "class" if "class" in scenarios else "domain"
    fcl = ["paradigm=federated_continual", "paradigm.num_clients=2", "paradigm.n_experiences=2",
           f"paradigm.scenario={scenario}", "paradigm.rounds_per_task=1",
           "paradigm.method=replay", "paradigm.mem_size=8"]  # fmt: skip
    cfg = config(out_dir, task, model, *fcl)
    key = f"fcl-contract-{task}-{model}"
    state = worker_state(key, cfg.plain)
    schedule = schedule_for(key, state)
    arrays = ArrayRecord(state.model.state_dict())
    first = train_continual_client(state, schedule, 0, arrays, {"server-round": 1}, {})
    assert first["metrics"]["replayed"] == 0 and first["metrics"]["buffer_size"] == 8
    second = train_continual_client(
        state, schedule, 0, ArrayRecord(first["state"]), {"server-round": 2}, first["memory"]
    )
    assert second["metrics"]["experience"] == 1.0 and second["metrics"]["replayed"] > 0
    assert math.isfinite(second["metrics"]["train_loss"])
