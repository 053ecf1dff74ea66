"""What paralab relies on inside Avalanche (``strategies/continual/avalanche_compat.py``): each
test fails with a message naming what an upgrade moved."""

from __future__ import annotations

import torch


def test_the_private_dataset_builder_still_takes_targets_and_task_labels():
    from paralab.strategies.continual import avalanche_compat

    data = torch.utils.data.TensorDataset(torch.zeros(4, 1, 2, 2), torch.zeros(4, 2, 2).long())
    try:
        dataset = avalanche_compat.taskaware_dataset(data, 3, [0, 1, 1, 2])
    except (ImportError, TypeError) as error:
        raise AssertionError(
            "Avalanche's _make_taskaware_classification_dataset(dataset, task_labels=, targets=) "
            f"changed ({error}); update taskaware_dataset in avalanche_compat.py"
        ) from error
    _x, y, t = dataset[1]
    assert y.shape == (2, 2) and t == 3, "items are no longer (x, y, task label)"
    assert list(dataset.targets) == [0, 1, 1, 2], "the given targets are no longer kept"


def test_synaptic_intelligence_snapshots_copies_not_views():
    from avalanche.training.plugins import SynapticIntelligencePlugin

    from paralab.strategies.continual import avalanche_compat

    assert SynapticIntelligencePlugin.extract_weights is avalanche_compat._si_extract_weights, (
        "SynapticIntelligencePlugin.extract_weights is no longer the patched function: Avalanche "
        "renamed or moved it; check whether its snapshot still aliases CPU parameters"
    )
    model = torch.nn.Linear(2, 1)
    names = [n for n, _ in SynapticIntelligencePlugin.allowed_parameters(model, set())]
    target = {n: torch.zeros(1) for n in names}
    SynapticIntelligencePlugin.extract_weights(model, target, set())
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(target["weight"], model.weight.flatten()), "the snapshot is a view"
