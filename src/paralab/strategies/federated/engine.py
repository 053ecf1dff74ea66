"""The federated engine: Flower's ``Grid`` interface, its nodes served by a pool of Ray actors.

The server loop and the Flower strategy talk to a grid (node ids, messages out, replies back);
the clients are Flower ``ClientApp``\\ s, called with a ``Message`` and a ``Context``. What sits
between them is this module: :class:`ClientWorker` actors, as many as fit the cluster at once
(``paradigm.client_resources``), each serving any client's message, and :class:`RayGrid`, whose
``send_and_receive`` hands a round's messages to the least loaded actors and collects the
replies with ``ray.wait``.

Why not Flower's ``run_simulation`` (used until this engine replaced it): on 60-image clients its
driver threads, link state and polling took about 8 ms of CPU per message, its actor wrapper
11 ms and the raylet 4 ms (``tools/overhead/federated_cpu.py``); and it builds its actors for one
run, so every run's workers imported torch and loaded the dataset again. Measured the same
afternoon (README, "Speed"): a warm 60-image round at 1.71-1.83 times ideal parallel compute
with it, 1.53-1.58 with this engine; a warm engine starts a run's first round 0.14-0.18 s after
the run asks (cold: 7.6-10.7 s to the end of round 1, plain Flower 10.1-12.1 s). Here:

- actors outlive a run when the caller keeps the engine warm (:mod:`.simulation`): a suite's
  second federated run finds Ray started and its workers with torch imported;
- :meth:`FederatedEngine.prepare` sends each actor the run's ClientApp, config and dataset as soon
  as the run starts, so workers build their model while the server builds its own;
- the dataset goes into Ray's object store once (``ray.put``) and is read zero-copy by every
  worker of a node (its images pickle as numpy arrays, see ``InMemoryImages.__reduce__``);
- a round's weights go into the object store once for all its clients, not once per message;
- while more messages are queued than there are actors, each actor holds the next one, which
  starts as the last ends (no round trip through the server between two clients);
- a reply wakes the server at once (``ray.wait``), with no polling loop.

A client that raises gets an error reply (as in Flower); an actor that dies (killed, out of
memory) gets one too and is replaced before its next message. Replies that come after their
round gave up on them are dropped. What reaches into Flower's internals (message ids, the
server's task identity) is kept in :mod:`.flower_compat`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from paralab.strategies.federated.flower_compat import join_message, stamp_message_id

FIRST_NODE_ID = 2  # node 1 is Flower's SuperLink (the server side of every message)


class ClientWorker:
    """One Ray actor: serves client messages for whichever run it was last prepared for."""

    def __init__(self) -> None:
        self.app: Any = None
        self.num_clients = 0

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


class NodeIndex:
    """Node id -> partition id, without a dict of every client (100,000 clients: no cost)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __getitem__(self, node_id: int) -> int:
        index = node_id - FIRST_NODE_ID
        if not 0 <= index < self.count:
            raise KeyError(node_id)
        return index


class FederatedEngine:
    """The client actors on the connected Ray, and the run they serve."""

    #: messages an actor holds at once while more are queued than there are actors: the next
    #: one waits in the actor, so it starts the moment the last one ends (no round trip through
    #: the server between two clients); with few left, one each, so none waits behind another
    DEPTH = 2

    def __init__(
        self, key: tuple, size: int, num_cpus: float, num_gpus: float, group: Any = None,
        bundles: Iterable[int] = (),
    ) -> None:  # fmt: skip
        """``size`` actors at most; with a placement ``group`` (:mod:`.placement`), one in each
        of its ``bundles``."""
        self.key, self.size = key, size
        self.options = {"num_cpus": num_cpus, "num_gpus": num_gpus}
        self.group, self.bundles = group, list(bundles)
        self.bundle_of: dict[Any, int | None] = {}  # actor -> its bundle in the group
        self.load: dict[Any, int] = {}  # actor -> messages in flight on it
        self.busy: dict[Any, tuple[Any, str]] = {}  # reply future -> (actor, message id)
        self.sent: dict[str, Any] = {}  # message id -> message, while its reply is awaited
        self.run_args: tuple | None = None
        self.session_started = time.perf_counter()  # when the current run asked for it

    def _add_actor(self, bundle: int | None) -> None:
        import ray

        options: dict[str, Any] = dict(self.options)
        if bundle is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.group, placement_group_bundle_index=bundle
            )
        actor = ray.remote(ClientWorker).options(**options).remote()
        if self.run_args is not None:
            actor.prepare.remote(*self.run_args)
        self.load[actor], self.bundle_of[actor] = 0, bundle

    def _free_bundle(self) -> int | None:
        if self.group is None:
            return None
        used = set(self.bundle_of.values())
        return next(b for b in self.bundles if b not in used)

    def prepare(self, run_key: str, app: Any, plain: dict, data: Any, num_clients: int) -> None:
        """Start (or reuse) the actors and have each build the run's state in the background:
        the dataset is put into the object store once, every actor reads it from there."""
        import ray

        self.run_args = (run_key, app, plain, ray.put(data), num_clients)
        for actor in self.load:
            actor.prepare.remote(*self.run_args)
        while len(self.load) < max(1, min(self.size, num_clients)):
            self._add_actor(self._free_bundle())

    def finish_run(self) -> None:
        """Forget the run (its dataset leaves the object store once no worker holds it) and
        kill the actors still busy with its messages (their replacements wait for a run)."""
        self.run_args = None
        self.kill_busy()

    def grid(self, num_clients: int) -> RayGrid:
        return RayGrid(self, num_clients)

    def exchange(self, messages: list, timeout: float | None, abort: threading.Event | None):
        """Send ``messages`` to actors as they free up; the replies that came back before
        ``timeout`` or ``abort``. A reply to a message of an earlier exchange is dropped."""
        import ray

        queue = deque(messages)
        wanted = {m.metadata.message_id for m in messages}
        contents: dict[int, Any] = {}  # one object-store copy per distinct content (the weights)
        end = None if timeout is None else time.monotonic() + timeout
        replies: list = []
        while queue or wanted & {mid for _, mid in self.busy.values()}:
            self._dispatch(queue, contents)
            left = None if end is None else end - time.monotonic()
            if (left is not None and left <= 0) or (abort is not None and abort.is_set()):
                break
            wait = 0.1 if left is None else min(0.1, left)
            done, _ = ray.wait(list(self.busy), num_returns=1, timeout=wait)
            for future in done:
                reply = self._collect(future)
                if reply is not None and reply.metadata.reply_to_message_id in wanted:
                    replies.append(reply)
        for mid in wanted:
            self.sent.pop(mid, None)
        return replies

    def _dispatch(self, queue: deque, contents: dict[int, Any]) -> None:
        """Hand queued messages to the least loaded actors, up to :attr:`DEPTH` each."""
        import ray

        while queue:
            actor = min(self.load, key=self.load.__getitem__)
            depth = self.DEPTH if len(queue) > len(self.load) else 1
            if self.load[actor] >= depth:
                return
            msg = queue.popleft()
            content = contents.get(id(msg.content))
            if content is None:
                content = contents[id(msg.content)] = ray.put(msg.content)
            pid = msg.metadata.dst_node_id - FIRST_NODE_ID
            future = actor.handle.remote(msg.metadata, content, pid)
            self.busy[future] = (actor, msg.metadata.message_id)
            self.sent[msg.metadata.message_id] = msg
            self.load[actor] += 1

    def _collect(self, future) -> Any:
        """The reply of a finished call; a dead actor's message gets an error reply and the
        actor a replacement."""
        import ray
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode

        actor, mid = self.busy.pop(future)
        if actor in self.load:
            self.load[actor] -= 1
        try:
            return ray.get(future)
        except ray.exceptions.RayActorError as error:
            self._replace(actor)
            sent = self.sent.get(mid)
            if sent is None:
                return None
            reason = f"the client's Ray worker died: {str(error).splitlines()[0]}"
            reply = Message(Error(ErrorCode.UNKNOWN, reason), reply_to=sent)
            stamp_message_id(reply)
            return reply

    def _replace(self, actor) -> None:
        bundle = self.bundle_of.pop(actor, None)
        if self.load.pop(actor, None) is not None:
            self._add_actor(bundle)  # waits for the dead one's bundle to be released

    def kill_busy(self) -> int:
        """Kill the actors still running a message (hung, too slow, or cut short by Ctrl-C);
        each gets a replacement. Returns how many were killed."""
        import ray

        busy = {actor for actor, _ in self.busy.values()}
        self.busy.clear()
        for actor in busy:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            self._replace(actor)
        return len(busy)

    def close(self) -> None:
        import ray

        for actor in self.load:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.load, self.busy, self.sent, self.run_args = {}, {}, {}, None
        self.bundle_of = {}


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
