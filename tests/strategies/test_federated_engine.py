"""The federated engine (paralab.strategies.federated.engine): Flower messages served by a pool
of Ray actors, and the warm engine a suite keeps between its federated runs.

The engine tests drive a real local Ray with two actors and a ClientApp written here, whose
clients can exit their worker process, raise, or hang; the warm-engine test runs the digits
quickstart three times (twice on one warm engine, once on its own).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

import paralab
from paralab.strategies.federated.engine import FIRST_NODE_ID, FederatedEngine
from paralab.strategies.federated.flower_compat import server_identity
from tests.processes import no_ray_left, stable


def client_app():
    """A ClientApp whose reply names the worker's pid; ``action`` in the message's config makes
    client ``target`` exit its worker process, raise, or sleep 3 s."""
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg, context):
        cid = int(context.node_config["partition-id"])
        config = msg.content["config"]
        if cid == config["target"]:
            if config["action"] == "exit":
                os._exit(1)
            if config["action"] == "raise":
                raise ValueError(f"client {cid} refuses")
            if config["action"] == "sleep":
                time.sleep(3)
        reply = ConfigRecord({"cid": cid, "pid": os.getpid()})
        return Message(RecordDict({"client": reply}), reply_to=msg)

    return app


@pytest.fixture(scope="class")
def engine():
    """Two client actors on a local Ray of 2 CPUs, prepared with :func:`client_app` (the run
    config is empty: the worker state they would build fails, which these clients never use)."""
    import ray

    from paralab.strategies.federated.local_ray import LocalRay, stop_ray

    local = LocalRay()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    local.started()
    engine = FederatedEngine(("test",), size=2, num_cpus=1, num_gpus=0)
    engine.prepare("engine-test", client_app(), {}, None, num_clients=4)
    try:
        yield engine
    finally:
        engine.close()
        stop_ray(local)


def exchange(
    engine, action: str, target: int, timeout: float = 60.0, count: int = 4
) -> dict[int, object]:
    """A round of ``count`` messages, one per client; the replies by client (an error reply by
    the client its message went to)."""
    from flwr.app import ConfigRecord, Message, RecordDict

    with server_identity(1):
        config = ConfigRecord({"action": action, "target": target})
        messages = [
            Message(RecordDict({"config": config}), dst_node_id=FIRST_NODE_ID + cid,
                    message_type="train")
            for cid in range(count)
        ]  # fmt: skip
        grid = engine.grid(count)
        replies = grid.send_and_receive(messages, timeout=timeout, abort=threading.Event())
    node = {m.metadata.message_id: m.metadata.dst_node_id - FIRST_NODE_ID for m in messages}
    return {node[r.metadata.reply_to_message_id]: r for r in replies}


def settle(engine, within: float = 20.0) -> None:
    """Rounds of quick clients until no actor is held by a client of an earlier test (a late
    sleeper, a replacement still starting)."""
    deadline = time.monotonic() + within
    exchange(engine, "none", -1)
    while engine.busy and time.monotonic() < deadline:
        exchange(engine, "none", -1)
    assert not engine.busy, "an actor is still busy with an earlier test's client"


class TestEngine:
    """On one engine (the fixture ends with the class, before any run starts a Ray)."""

    def test_a_client_that_raises_gets_an_error_reply_and_the_others_reply(self, engine):
        replies = exchange(engine, "raise", target=2)
        assert sorted(replies) == [0, 1, 2, 3]
        assert replies[2].has_error() and "client 2 refuses" in replies[2].error.reason
        assert all(not replies[c].has_error() for c in (0, 1, 3))
        assert {int(replies[c].content["client"]["cid"]) for c in (0, 1, 3)} == {0, 1, 3}

    def test_a_dead_worker_fails_its_client_only_and_is_replaced(self, engine):
        before = {int(r.content["client"]["pid"]) for r in exchange(engine, "none", -1).values()}
        replies = exchange(engine, "exit", target=1)
        assert replies[1].has_error() and "worker died" in replies[1].error.reason
        assert all(not replies[c].has_error() for c in (0, 2, 3))
        after = exchange(engine, "none", -1)  # the replacement serves the next round
        assert all(not r.has_error() for r in after.values()) and len(after) == 4
        pids = {int(r.content["client"]["pid"]) for r in after.values()}
        assert len(engine.load) == 2 and pids - before, "the dead worker was not replaced"

    def test_a_late_reply_misses_its_round_and_is_not_taken_for_the_next(self, engine):
        started = time.monotonic()
        replies = exchange(engine, "sleep", target=0, timeout=1.0)
        assert time.monotonic() - started < 2.5
        assert 0 not in replies and sorted(replies) == [1, 2, 3]
        following = exchange(engine, "none", -1)  # the sleeper's reply arrives during this one
        assert sorted(following) == [0, 1, 2, 3]
        assert all(not r.has_error() for r in following.values())

    def test_a_straggler_holds_back_none_of_the_clients_batched_behind_it(self, engine):
        """Each actor gets half of the 8 messages in one call; the one whose first client
        sleeps gives the others it has not started to the actor that finished (in the engine
        that sent one message at a time, the message held behind the sleeper missed the round)."""
        settle(engine)
        started = time.monotonic()
        replies = exchange(engine, "sleep", target=0, timeout=1.5, count=8)
        assert time.monotonic() - started < 3.0
        assert sorted(replies) == list(range(1, 8))
        assert all(not r.has_error() for r in replies.values())
        following = exchange(engine, "none", -1, count=8)
        assert sorted(following) == list(range(8))

    def test_a_dead_worker_fails_only_the_client_it_was_running(self, engine):
        """The worker dies on the first client of its batch: the three behind it never started,
        so they are sent again (to the other actor or the replacement) and reply."""
        replies = exchange(engine, "exit", target=0, count=8)
        assert sorted(replies) == list(range(8))
        assert replies[0].has_error() and "worker died" in replies[0].error.reason
        assert all(not replies[c].has_error() for c in range(1, 8))
        assert len(engine.load) == 2


def test_a_warm_engine_serves_the_next_run_with_the_same_results(tmp_path):
    """Inside ``paralab.warm()`` (what a sequential suite holds), the second run finds Ray and
    its workers up, skips their start-up, and ends with the metrics of a run of its own."""
    from paralab.strategies.federated import simulation

    runs = ["quickstart_federated", "paradigm.num_clients=2", "paradigm.rounds=2",
            "paradigm.fraction_evaluate=0", "tracking.wandb=disabled"]  # fmt: skip
    with paralab.warm():
        paralab.run(runs[0], [*runs[1:], f"output_dir={tmp_path / 'a'}"])
        held = simulation._held
        assert held is not None, "the engine was not kept after the first run"
        second = paralab.run(runs[0], [*runs[1:], "seed=1", f"output_dir={tmp_path / 'b'}"])
        assert simulation._held is held, "the second run did not reuse the warm engine"
    assert simulation._held is None and no_ray_left()
    alone = paralab.run(runs[0], [*runs[1:], "seed=1", f"output_dir={tmp_path / 'c'}"])
    assert stable(second["metrics"]) == stable(alone["metrics"])
    assert second["metrics"]["time/startup_s"] < alone["metrics"]["time/startup_s"]
    assert no_ray_left()
