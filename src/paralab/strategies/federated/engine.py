"""The federated engine: Flower's ``Grid`` interface, its nodes served by a pool of Ray actors.

The server loop and the Flower strategy talk to a grid (node ids, messages out, replies back);
the clients are Flower ``ClientApp``\\ s, called with a ``Message`` and a ``Context``. What sits
between them is this module: :class:`~.worker.ClientWorker` actors, as many as fit the cluster
at once (``paradigm.client_resources``), each serving any client's message, and :class:`RayGrid`,
whose ``send_and_receive`` splits a round's messages over the least loaded actors and collects
the replies with ``ray.wait``.

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
- each actor gets its share of a round as one streaming call (one Ray task per actor and
  round, not per client): the next client starts as the last ends, with no round trip through
  the server, and each reply comes back as it is made. Against one call per client (two held
  per actor), measured alternately on 60-image clients: the raylet's CPU per round halved
  (0.022-0.023 to 0.010-0.012 CPU-s), a warm round 13 % shorter, round / the clients' compute
  1.22-1.28 to 1.19-1.21 (README, "Speed");
- an actor that finishes its share while another still has clients waiting takes the back half
  of them (work stealing, confirmed by the other actor: a client never runs twice), so a
  straggler holds back none of the clients behind it;
- a reply wakes the server at once (``ray.wait``), with no polling loop.

A client that raises gets an error reply (as in Flower); an actor that dies (killed, out of
memory) gets one for the client it was running, the clients of its share that had not started
are sent again, and it is replaced. Replies that come after their round gave up on them are
dropped. What reaches into Flower's internals (message ids, the
server's task identity) is kept in :mod:`.flower_compat`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from paralab.strategies.federated.flower_compat import stamp_message_id
from paralab.strategies.federated.grid import FIRST_NODE_ID, RayGrid
from paralab.strategies.federated.worker import CONCURRENCY_GROUPS, CONTROL, ClientWorker


class FederatedEngine:
    """The client actors on the connected Ray, and the run they serve."""

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
        self.busy: dict[Any, tuple[Any, deque]] = {}  # stream -> (actor, ids not answered)
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
        worker = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(ClientWorker)
        actor = worker.options(**options).remote()
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
        """Send ``messages`` to the actors, a batch each; the replies (one per message, in
        arrival order) that came back before ``timeout`` or ``abort``. A reply to a message of
        an earlier exchange is dropped."""
        import ray

        queue = deque(messages)
        wanted = {m.metadata.message_id for m in messages}
        for msg in messages:
            self.sent[msg.metadata.message_id] = msg
        end = None if timeout is None else time.monotonic() + timeout
        replies: dict[str, Any] = {}  # message id -> its first reply
        while wanted - replies.keys():
            if queue:
                self._dispatch(queue)
            else:
                self._steal(queue)
            if not self.busy:  # nothing in flight, nothing left to send: no reply can come
                break
            left = None if end is None else end - time.monotonic()
            if (left is not None and left <= 0) or (abort is not None and abort.is_set()):
                break
            wait = 0.1 if left is None else min(0.1, left)
            done, _ = ray.wait(list(self.busy), num_returns=1, timeout=wait)
            for stream in done:
                for reply in self._collect(stream, queue):
                    mid = reply.metadata.reply_to_message_id
                    if mid in wanted and mid not in replies:
                        replies[mid] = reply
        for mid in wanted:
            self.sent.pop(mid, None)
        return list(replies.values())

    def _dispatch(self, queue: deque) -> None:
        """Split the queued messages over the least loaded actors, one streaming call each (the
        round's weights go into the object store once, whatever number of clients share them)."""
        import ray

        least = min(self.load.values())  # an actor still held by a late client gets none
        actors = [actor for actor, load in self.load.items() if load == least]
        contents: dict[int, int] = {}  # id(content) -> its index in the call's arguments
        refs: list = []
        for k, actor in enumerate(actors):
            share = -(-len(queue) // (len(actors) - k))  # ceil: what is left, evenly
            batch = [queue.popleft() for _ in range(share)]
            if not batch:
                continue
            jobs = []
            for msg in batch:
                which = contents.get(id(msg.content))
                if which is None:
                    which = contents[id(msg.content)] = len(refs)
                    refs.append(ray.put(msg.content))
                jobs.append((msg.metadata, which, msg.metadata.dst_node_id - FIRST_NODE_ID))
            stream = actor.handle_batch.options(num_returns="streaming").remote(jobs, *refs)
            self.busy[stream] = (actor, deque(m.metadata.message_id for m in batch))
            self.load[actor] += 1

    def _steal(self, queue: deque) -> None:
        """An idle actor takes the back half of the longest batch still waiting on another
        actor (what has not started there, as that actor confirms): a slow client, or one actor
        slower than the others, holds back none of the messages behind it."""
        import ray

        for _ in [a for a, load in self.load.items() if load == 0]:
            waiting = [
                (mids, actor)
                for actor, mids in self.busy.values()
                if len(mids) > 1 and mids[-1] in self.sent  # a batch of this exchange
            ]
            if not waiting:
                return
            mids, victim = max(waiting, key=lambda item: len(item[0]))
            asked = list(mids)[len(mids) - len(mids) // 2 :]
            try:
                taken = ray.get(victim.skip.options(concurrency_group=CONTROL).remote(asked))
            except ray.exceptions.RayActorError:
                return  # it died: its stream says so, and its messages are sent again
            if not taken:
                return
            for mid in taken:
                mids.remove(mid)
            queue.extend(self.sent[mid] for mid in taken)
            self._dispatch(queue)

    def _collect(self, stream, queue: deque) -> list:
        """The next reply of a streaming call (none when it ended). When its actor died: an
        error reply for the message it was running, its messages that had not started queued
        again, and the actor a replacement."""
        import ray
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode

        actor, mids = self.busy[stream]
        try:
            reply = ray.get(next(stream))
        except StopIteration:
            self._done(stream)
            return []
        except ray.exceptions.RayActorError as error:
            self._done(stream)
            self._replace(actor)
            running = self.sent.get(mids.popleft()) if mids else None
            queue.extend(self.sent[mid] for mid in mids if mid in self.sent)
            mids.clear()
            if running is None:
                return []
            reason = f"the client's Ray worker died: {str(error).splitlines()[0]}"
            failed = Message(Error(ErrorCode.UNKNOWN, reason), reply_to=running)
            stamp_message_id(failed)
            return [failed]
        mids.remove(reply.metadata.reply_to_message_id)
        if not mids:  # its last reply: the actor is free (the stream's end need not be read)
            self._done(stream)
        return [reply]

    def _done(self, stream) -> None:
        actor, _ = self.busy.pop(stream)
        if actor in self.load:
            self.load[actor] -= 1

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
