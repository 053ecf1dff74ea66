"""The federated round loop, with each client's continual state and the accuracy matrix.

Why the server keeps the clients' state: a simulated client is a function call on whichever Ray
worker is free, so nothing a client keeps on a worker survives the next time it is sampled
(another worker), a worker restart or ``--resume``. The store here is "the clients' disks":
each message carries the client's state (:class:`~.methods.ClientMemory`: replay indices,
importances, a teacher) out and back, the loop keeps the latest per client (only from clients
that succeeded: a crashed client's round is lost, as its disk would not have been written), and
every checkpoint holds all of them. The state never reaches the strategy: it is taken off each
reply before aggregation (a Flower strategy averages every ArrayRecord it is given) and it is
counted apart from the model's bytes (``bytes/client_state``), since a real client keeps it.

After the last round of every phase the global model's scores on every experience's test
images become one row of the accuracy matrix (kept in the loop state, so a resumed run has it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from paralab.strategies.federated.server import LoopState, ServerLoop


@dataclass
class ContinualLoopState(LoopState):
    """The federated loop state plus the matrix rows and the clients' state sizes."""

    matrix: list[list[float]] = field(default_factory=list)
    state_bytes: dict[str, float] = field(default_factory=dict)  # cid -> bytes of its state
    #: client_eval: cid -> one row per phase it ended (experience -> its own model's score)
    client_rows: dict[str, list[dict[str, float]]] = field(default_factory=dict)


class ContinualServerLoop(ServerLoop):
    """:class:`ServerLoop` with per-client state in and out of every message (module doc)."""

    def __init__(
        self,
        *args: Any,
        schedule: Any,
        store: dict[int, dict],
        server_step: Any = None,
        client_scorer: Any = None,
    ) -> None:
        super().__init__(*args)
        self.schedule, self.store, self.server_step = schedule, store, server_step
        self.client_scorer = client_scorer

    def round_config(self, rnd: int):
        from flwr.app import ConfigRecord

        return ConfigRecord({"phase": self.schedule.phase(rnd)})

    def before_send(self, messages: list, grid: Any) -> dict[str, float]:
        """Attach each sampled client's state; count its bytes."""
        from flwr.app import ArrayRecord, RecordDict

        sent = 0.0
        for msg in messages:  # the strategy's messages share one content: each gets its own
            cid = grid.index[msg.metadata.dst_node_id]
            record = ArrayRecord(self.store.get(cid, {}))
            content = RecordDict(dict(msg.content))
            content["cstate"] = record
            msg.content = content
            sent += record.count_bytes()
        return {"bytes/client_state_down": sent}

    def after_receive(self, replies: list) -> dict[str, float]:
        """Keep each succeeded client's new state and take it (and its prototypes) off the
        reply before the strategy sees it; count their bytes."""
        received, prototypes = 0.0, 0.0
        for reply in replies:
            record = reply.content["cstate"]
            received += record.count_bytes()
            cid = int(reply.content["client"]["cid"])
            self.store[cid] = dict(record.to_torch_state_dict())
            self.state.state_bytes[str(cid)] = float(reply.content["metrics"]["state_bytes"])
            del reply.content["cstate"]
            if self.server_step is not None:
                prototypes += self.server_step.collect(cid, reply)
            if self.client_scorer is not None and self.schedule.last_round_of_phase(self.round):
                self._score_client(cid, reply.content["arrays"])
        extra = {"bytes/prototypes_up": prototypes} if self.server_step is not None else {}
        return {"bytes/client_state_up": received, **extra}

    def _score_client(self, cid: int, arrays: Any) -> None:
        """The client's own model on every experience it has trained: one more row."""
        phase = self.schedule.phase(self.round)
        seen = sorted(set(self.schedule.orders[cid][: phase + 1]))
        scored = self.client_scorer(arrays, seen)
        row = {str(e): score for e, (score, _) in scored.items()}
        self.state.client_rows.setdefault(str(cid), []).append(row)

    def after_aggregate(self, rnd: int, arrays):
        return self.server_step.apply(rnd, arrays) if self.server_step is not None else arrays

    def _end_round(self, rnd: int, metrics: dict[str, float], ok: int, failed: int) -> None:
        if self.schedule.last_round_of_phase(rnd):
            n = len(self.schedule.experiences)
            self.state.matrix.append([metrics.get(f"test/exp{j}", float("nan")) for j in range(n)])
            metrics["phase"] = float(self.schedule.phase(rnd))
        if self.state.state_bytes:
            sizes = list(self.state.state_bytes.values())
            metrics["memory/client_state_bytes_mean"] = sum(sizes) / len(sizes)
            metrics["memory/client_state_bytes_max"] = max(sizes)
        super()._end_round(rnd, metrics, ok, failed)


def encode_store(store: dict[int, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """The store as a checkpoint holds it (string keys, cloned tensors)."""
    return {str(cid): {k: v.clone() for k, v in state.items()} for cid, state in store.items()}


def decode_store(saved: dict[str, dict[str, torch.Tensor]]) -> dict[int, dict[str, torch.Tensor]]:
    return {int(cid): dict(state) for cid, state in saved.items()}
