"""Where a federated run reaches into Flower's (and Ray's) internals; nothing else does.

Each helper below works around a behaviour of Flower 1.41 / Ray 2.55 that no public API
controls. The internals they rely on are asserted by
``test_the_flower_and_ray_internals_the_run_relies_on_are_still_there``
(tests/strategies/test_federated_lifecycle.py), so an upgrade that moves one fails there
instead of silently bringing back a hang or a second Ray:

Flower
- ``Message.metadata``'s ``_message_id`` slot, which Flower's own grids fill when a message is
  pushed (:func:`stamp_message_id`): paralab's engine (:mod:`.engine`) is the grid here;
- ``Message(content=..., metadata=...)`` (marked "for internal use" by Flower), which
  :func:`join_message` uses to rebuild a message in a worker whose content travelled apart
  (one copy of the round's weights in the object store for every client, not one per message);
- ``flwr.supercore.task_identity.TaskIdentity`` (``run_id``, ``node_id``, ``task_id``), which a
  strategy's ``Message(...)`` reads for the sender; Flower's ServerApp runner sets it, and
  :func:`server_identity` sets it for paralab's server loop.

Ray
- ``ray._private.auto_init_hook.enable_auto_connect``, switched by :func:`no_auto_init`;
- ``ray.init(_system_config=...)`` and its ``max_direct_call_object_size`` key, which
  :func:`local_ray_system_config` raises for the local Ray a run starts (an unknown key makes
  Ray's GCS exit, and ``ray.init`` time out).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

# --- Flower ---------------------------------------------------------------------------------


def stamp_message_id(message: Any) -> str:
    """Give ``message`` a unique id unless it has one (replies point to it by this id)."""
    from uuid import uuid4

    if not message.metadata.message_id:
        message.metadata.__dict__["_message_id"] = uuid4().hex
    return message.metadata.message_id


def join_message(metadata: Any, content: Any) -> Any:
    """The message with this metadata (its id and destination) and content."""
    from flwr.app import Message

    return Message(content=content, metadata=metadata)


@contextlib.contextmanager
def server_identity(run_id: int) -> Iterator[None]:
    """Messages built while this is active come from the server (Flower's SuperLink node) of
    run ``run_id``."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


# --- Ray ------------------------------------------------------------------------------------


@contextlib.contextmanager
def no_auto_init() -> Iterator[None]:
    """No Ray call may start a Ray of its own while the simulation runs or winds down.

    Ray wraps ``ray.get``/``ray.put``/... so that a call without a connection starts a local
    Ray (``ray._private.auto_init_hook``). A Flower thread that reached ``ray.get`` after the
    shutdown started a second Ray, which nothing stopped. Ray internals: the module flag it
    reads (from ``RAY_ENABLE_AUTO_CONNECT`` at import) is switched off here and restored after.
    """
    from ray._private import auto_init_hook

    previous = auto_init_hook.enable_auto_connect
    auto_init_hook.enable_auto_connect = False
    try:
        yield
    finally:
        auto_init_hook.enable_auto_connect = previous


#: the largest task reply that travels inline, inside Ray's reply to the caller, instead of
#: through the object store (Ray's default: 100 KiB)
INLINE_REPLY_BYTES = 8 * 2**20


def local_ray_system_config() -> dict[str, Any]:
    """Ray settings for a local Ray that paralab starts.

    A client's reply carries its model's weights (0.38 MB for the ``cnn``): above Ray's 100 KiB
    it went into the object store, a round trip through the raylet on the actor and on the
    driver per message. Inline, measured with ``tools/overhead/federated_cpu.py`` (60-image
    clients, 30 rounds, alternated twice): raylet CPU 0.040, 0.035 -> 0.019, 0.018 s a round,
    driver 0.069, 0.064 -> 0.055, 0.052 s, round 0.359, 0.325 -> 0.333, 0.311 s. Replies
    larger than :data:`INLINE_REPLY_BYTES` (resnet18's 45 MB) still go through the store."""
    return {"max_direct_call_object_size": INLINE_REPLY_BYTES}
