"""Every strategy name maps onto a Flower strategy that aggregates real client replies
(no Ray: the round's configure/aggregate calls on fake replies), and its state round-trips."""

import numpy as np
import pytest
import torch

from paralab.strategies.federated.config import FederatedConfig
from paralab.strategies.federated.strategies import (
    STRATEGIES,
    build_strategy,
    load_strategy_state,
    strategy_state,
)


@pytest.fixture(autouse=True)
def task_identity():
    """Messages need a run identity; the simulation engine sets one the same way."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


class FakeGrid:
    def __init__(self, n: int) -> None:
        self.ids = list(range(1, n + 1))

    def get_node_ids(self):
        return list(self.ids)


def replies(global_arrays, n: int, seed: int = 0):
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        arrays = ArrayRecord(
            {k: Array((v.numpy() + rng.normal(0, 0.1, v.numpy().shape)).astype(np.float32))
             for k, v in global_arrays.items()}
        )  # fmt: skip
        content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 10 + i})})
        out.append(Message(content=content, dst_node_id=i + 1, message_type="train"))
    return out


@pytest.mark.parametrize("name", STRATEGIES)
def test_each_strategy_aggregates_and_its_state_round_trips(name):
    from flwr.app import Array, ArrayRecord, ConfigRecord

    cfg = FederatedConfig(strategy=name, num_clients=12, fraction_train=1.0)
    cfg.options.num_malicious = 1
    cfg.options.num_selected = 3
    strategy = build_strategy(cfg)
    start = ArrayRecord(
        {"w": Array(np.zeros((3, 4), np.float32)), "b": Array(np.ones(4, np.float32))}
    )
    grid = FakeGrid(12)
    for rnd in (1, 2):
        messages = list(strategy.configure_train(rnd, start, ConfigRecord(), grid))
        assert len(messages) == 12
        if name == "fedprox":
            assert messages[0].content["config"]["proximal-mu"] == cfg.options.proximal_mu
        arrays, _ = strategy.aggregate_train(rnd, replies(start, 12, seed=rnd))
        assert arrays is not None and set(arrays) == {"w", "b"}
        assert np.isfinite(arrays["w"].numpy()).all()
        start = arrays
    saved = torch.load(_roundtrip(strategy_state(strategy)), weights_only=True)
    fresh = build_strategy(cfg)
    load_strategy_state(fresh, saved)
    for attr in ("m_t", "v_t", "momentum_vector", "current_arrays"):
        if getattr(strategy, attr, None) is not None:
            assert getattr(fresh, attr) is not None, attr


def _roundtrip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer
