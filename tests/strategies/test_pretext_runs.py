"""Self-supervision under the paradigms a user runs it in, end to end: rotation pre-training by
federated clients on their unlabelled digits, probed on the server at the end, and the backbone
it leaves starting a labelled run."""

from __future__ import annotations

import paralab

TINY = ["task=rotation", "model.channels=[8,16]", "data.train_limit=400",
        "tracking.wandb=disabled", "trainer.progress_bar=false",
        "trainer.num_threads=1"]  # fmt: skip
FEDERATED = ["paradigm=federated", "paradigm.num_clients=4", "paradigm.min_train_clients=4",
             "paradigm.rounds=2", "paradigm.partition.scheme=shards",
             "paradigm.ray_num_cpus=2"]  # fmt: skip


def test_federated_rotation_is_probed_on_the_server_and_its_backbone_starts_a_run(tmp_path):
    probe = ["probe.enabled=true", "probe.linear_epochs=20", f"output_dir={tmp_path}"]
    summary = paralab.run("quickstart_offline", [*TINY, *FEDERATED, *probe])
    metrics = summary["metrics"]
    assert summary["status"] == "completed" and summary["task"] == "rotation"
    assert metrics["rounds"] == 2 and 0 <= metrics["test/knn_acc"] <= 1
    assert 0 <= metrics["test/pretext_acc"] <= 1
    assert metrics["probe/linear_acc"] > 0.5 and metrics["probe/knn_acc"] > 0.5  # 10 digits
    tuned = paralab.run(
        "quickstart_offline",
        ["model.channels=[8,16]", "tracking.wandb=disabled", "trainer.num_threads=1",
         "trainer.max_epochs=5", "data.label_fraction=0.5", f"output_dir={tmp_path}",
         f"model.init_from={summary['run_dir']}"],
    )  # fmt: skip
    assert tuned["status"] == "completed" and tuned["metrics"]["test/acc"] > 0.3
