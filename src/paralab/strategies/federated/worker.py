"""A client worker: the Ray actor that serves Flower client messages for :mod:`.engine`.

A worker runs one batch of messages per round as a streaming call (``handle_batch``): one Ray
call per actor and round instead of one per client, each reply sent back as soon as it is made.
Its second thread (Ray concurrency group ``control``) takes ``skip`` while a batch runs: the
engine moves messages that have not started to a worker that finished early (work stealing), so
a straggler holds back none of its batch-mates. ``skip`` answers with the messages it took out,
under the batch's lock: a message is run by one worker only, never by both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from paralab.strategies.federated.flower_compat import join_message, stamp_message_id

#: Ray concurrency groups of a worker: batches run one at a time in the default group; ``skip``
#: lands in its own thread while a batch runs
CONTROL = "control"
CONCURRENCY_GROUPS = {CONTROL: 1}


class ClientWorker:
    """One Ray actor: serves client messages for whichever run it was last prepared for."""

    def __init__(self) -> None:
        self.app: Any = None
        self.num_clients = 0
        self.waiting: set[str] = set()  # ids of the running batch's messages not started
        self.lock = threading.Lock()

    def prepare(self, run_key: str, app: Any, plain: dict, data: Any, num_clients: int) -> str:
        """Take the run's ClientApp and build its worker state now (torch, data, model).
        Returns "" or, when the state cannot be built, why (each message will then say it)."""
        from paralab.strategies.federated.client import worker_state

        self.app, self.num_clients = app, num_clients
        try:
            worker_state(run_key, plain, data)
        except Exception as error:  # reported by every client message that needs the state
            return f"{type(error).__name__}: {error}"
        return ""

    def handle(self, metadata: Any, content: Any, partition_id: int) -> Any:
        """The ClientApp's reply to one message, or an error reply naming what it raised."""
        from flwr.app import Context, Error, Message, RecordDict
        from flwr.common.constant import ErrorCode

        message = join_message(metadata, content)
        context = Context(
            run_id=message.metadata.run_id,
            node_id=message.metadata.dst_node_id,
            node_config={"partition-id": partition_id, "num-partitions": self.num_clients},
            state=RecordDict(),
            run_config={},
        )
        try:
            reply = self.app(message, context)
        except Exception as error:
            reason = f"{type(error)}:<'{error}'>"
            reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=message)
        stamp_message_id(reply)
        return reply

    def handle_batch(self, jobs: list[tuple[Any, int, int]], *contents: Any) -> Iterator[Any]:
        """A streaming call: each job ``(metadata, index into contents, partition id)`` in
        turn, its reply yielded as soon as it is made; a job skipped meanwhile is left out."""
        with self.lock:
            self.waiting = {metadata.message_id for metadata, _, _ in jobs}
        for metadata, which, partition_id in jobs:
            with self.lock:
                if metadata.message_id not in self.waiting:
                    continue
                self.waiting.discard(metadata.message_id)
            yield self.handle(metadata, contents[which], partition_id)

    def skip(self, message_ids: list[str]) -> list[str]:
        """Leave out those of ``message_ids`` that the running batch has not started; returns
        them (the caller hands only these to another worker)."""
        with self.lock:
            taken = [mid for mid in message_ids if mid in self.waiting]
            self.waiting.difference_update(taken)
        return taken
