"""What Flower's strategies and the server loop see of the engine: a grid of client nodes.

:class:`RayGrid` offers the calls of Flower's ``Grid`` that they make (node ids, a blocking
``send_and_receive``) for one run on a :class:`~.engine.FederatedEngine`; node ids map to
partition ids without a table (:class:`NodeIndex`), so 100,000 clients cost nothing here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from paralab.strategies.federated.flower_compat import stamp_message_id

if TYPE_CHECKING:
    from paralab.strategies.federated.engine import FederatedEngine

FIRST_NODE_ID = 2  # node 1 is Flower's SuperLink (the server side of every message)


class NodeIndex:
    """Node id -> partition id, without a dict of every client (100,000 clients: no cost)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __getitem__(self, node_id: int) -> int:
        index = node_id - FIRST_NODE_ID
        if not 0 <= index < self.count:
            raise KeyError(node_id)
        return index


class RayGrid:
    """The calls Flower's ``Grid`` offers its strategies, for one run on a
    :class:`FederatedEngine`: node ids in partition order (Flower samples with ``random.sample``
    over them; seeded per round, sampling repeats), and a blocking ``send_and_receive`` that
    also stops on ``abort`` (the server loop and Flower's strategies call no other; the two-step
    ``push_messages``/``pull_messages`` is not offered)."""

    def __init__(self, engine: FederatedEngine, num_clients: int) -> None:
        self.engine = engine
        self.index = NodeIndex(num_clients)
        self.node_ids = range(FIRST_NODE_ID, FIRST_NODE_ID + num_clients)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def send_and_receive(
        self, messages: Iterable, *, timeout: float | None = None, abort=None
    ) -> list:
        """Push ``messages``, return the replies (in arrival order) that came before ``timeout``
        seconds passed or ``abort`` was set; a client that did not reply has no entry."""
        pushed = list(messages)
        for msg in pushed:
            stamp_message_id(msg)
        return self.engine.exchange(pushed, timeout, abort)
