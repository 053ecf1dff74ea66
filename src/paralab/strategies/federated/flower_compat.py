"""Where a federated run reaches into Flower's (and Ray's) internals; nothing else does.

Each helper below works around a behaviour of Flower 1.41 / Ray 2.55 that no public API
controls. They rely on these internals; the ones marked (checked) are asserted by
``test_the_flower_and_ray_internals_the_run_relies_on_are_still_there``
(tests/strategies/test_federated_lifecycle.py), so an upgrade that moves one fails there
instead of silently bringing back a hang, a stray process or a second Ray:

Flower
- ``flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue`` (checked): the
  simulation's message dispatch loop, swapped by :func:`fast_dispatch`;
- the in-memory link state's ``message_ins_store``, ``lock`` and ``get_message_ins``, and a
  message's ``metadata.dst_node_id``/``delivered_at``, read by :func:`_dispatch_pending` (a
  state without the first two keeps Flower's own, slower loop);
- ``flwr.simulation.run_simulation`` (the module): its ``event`` name (checked), swapped by
  :func:`no_idle_telemetry`, and ``flwr.supercore.telemetry.FLWR_TELEMETRY_ENABLED``;
- ``flwr.simulation.ray_transport.ray_actor.BasicActorPool`` and its ``_future_to_actor``
  (checked), used by :func:`actor_pools` and :func:`kill_busy_clients`.

Ray: one internal only, so it is kept here rather than in a module of its own
- ``ray._private.auto_init_hook.enable_auto_connect`` (checked), switched by
  :func:`no_auto_init`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# --- Flower ---------------------------------------------------------------------------------


def _dispatch_pending(state, queue, nodes_mapping, f_stop) -> None:
    """Flower's message extractor, made O(messages in flight) instead of O(clients).

    Flower's own loop asks the link state for every registered node's messages every 100 ms,
    and each ask scans every stored message: with 1,000 clients that is 10,000 scans per poll,
    CPU taken from the clients, growing with the client count. This asks only for the nodes
    that have an undelivered message, through the same ``get_message_ins`` call (which marks
    them delivered), every 5 ms.
    """
    store = getattr(state, "message_ins_store", None)
    lock = getattr(state, "lock", None)
    while not f_stop.is_set():
        with lock:
            nodes = {m.metadata.dst_node_id for m in store.values() if not m.metadata.delivered_at}
        for node_id in nodes & nodes_mapping.keys():
            for msg in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(msg)
        f_stop.wait(0.005)


@contextlib.contextmanager
def fast_dispatch():
    """Swap in :func:`_dispatch_pending` for the duration of one simulation (in-memory state
    only; anything else keeps Flower's loop)."""
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue

    def dispatch(state, queue, nodes_mapping, f_stop):
        if hasattr(state, "message_ins_store") and hasattr(state, "lock"):
            return _dispatch_pending(state, queue, nodes_mapping, f_stop)
        return original(state, queue, nodes_mapping, f_stop)

    vce_api.add_messages_to_queue = dispatch
    try:
        yield
    finally:
        vce_api.add_messages_to_queue = original


@contextlib.contextmanager
def no_idle_telemetry() -> Iterator[None]:
    """Skip Flower's telemetry events while its telemetry is off (paralab's default).

    Off, ``event()`` still builds each payload in a thread of its own, and
    ``platform.architecture()`` there runs ``file`` in a subprocess: a process of the run that
    could still be running after the run returned. Flower internals: ``run_simulation``'s module
    imports ``event`` by name; it is swapped for a no-op for the duration of one simulation.
    """
    import importlib
    from concurrent.futures import Future

    from flwr.supercore import telemetry

    module = importlib.import_module("flwr.simulation.run_simulation")  # not the function
    if telemetry.FLWR_TELEMETRY_ENABLED == "1":
        yield
        return

    def skip(event_type, event_details=None) -> Future:
        done: Future = Future()
        done.set_result("disabled")
        return done

    original, module.event = module.event, skip
    try:
        yield
    finally:
        module.event = original


def actor_pools() -> list:
    """Flower's client actor pools alive in this process (none before the engine built one).

    Flower keeps its actor pool inside the engine's call frame, with no handle outside; it is
    found among live objects instead (Flower internals: ``BasicActorPool._future_to_actor``).
    """
    import gc

    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    return [o for o in gc.get_objects() if isinstance(o, BasicActorPool)]


def kill_busy_clients(pools: list | None = None) -> int:
    """Kill the Ray actors that are still running a client call (hung, too slow, or cut short
    by Ctrl-C). ``ray.get`` on a killed actor raises at once, which lets the engine's threads
    finish, on a local Ray and on a cluster alike. Returns how many were killed."""
    import ray

    killed = 0
    for pool in pools or actor_pools():
        for actor in list(pool._future_to_actor.values()):
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
                killed += 1
    return killed


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
