"""Attach to a Ray cluster the test starts (a head and a second node on this machine).

Each node offers one CPU and each client needs one, so the two client workers must land on
different nodes.
"""

import csv
from pathlib import Path

import psutil
import pytest

import paralab


def test_clients_run_on_both_nodes_of_an_existing_cluster(two_node_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", two_node_cluster)
    summary = paralab.run("quickstart_federated", [
        "tracking.wandb=disabled", "paradigm.num_clients=4", "paradigm.rounds=2",
        "paradigm.fraction_evaluate=0", "paradigm.client_resources.num_cpus=1",
        f"output_dir={tmp_path}",
    ])  # fmt: skip
    assert summary["metrics"]["clients/succeeded_total"] == 8
    with (Path(summary["run_dir"]) / "metrics.csv").open() as f:
        nodes = [float(r["clients/nodes"]) for r in csv.DictReader(f) if r.get("clients/nodes")]
    assert max(nodes) == 2
    # the cluster is still up (the run only disconnected); its processes are not our children
    assert not psutil.Process().children(recursive=True)
    monkeypatch.setenv("PARALAB_PLACEMENT_GROUP", "no-such-group")
    with pytest.raises(paralab.ConfigError, match="no Ray placement group of that name"):
        paralab.run("quickstart_federated", ["tracking.wandb=disabled", "paradigm.rounds=1",
                                             f"output_dir={tmp_path}"])  # fmt: skip
