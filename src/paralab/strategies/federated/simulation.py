"""Ray for one federated run: a local instance started and stopped by the run, or an existing
cluster (``paradigm.ray_address`` or ``$RAY_ADDRESS``, passed alone: adding ``num_cpus`` to an
address raises and can hang). Flower's simulation engine then runs the ServerApp in a thread of
this process and the ClientApps in Ray actors. Whatever happens, Ray is shut down afterwards, so
a run leaves no process behind, and a watchdog stops a run that outlives its timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from paralab.errors import ConfigError
from paralab.platform.quiet import QUIET_ENV
from paralab.strategies.federated.server import FederatedRunError

GRACE_S = 10.0  # how long the engine gets to stop after the server did, before Ray is torn down


def quiet_flower() -> None:
    """Flower logs ~50 INFO lines and a deprecation banner per run, and a traceback per failed
    client; the round loop reports all of that itself (one line per round, errors by reason)."""
    logging.getLogger("flwr").setLevel(logging.CRITICAL)
    for name in ("ray", "ray.data", "ray.tune", "ray.rllib", "ray.serve", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def ray_address(cfg) -> str | None:
    return cfg.ray_address or os.environ.get("RAY_ADDRESS") or None


def start_ray(cfg) -> bool:
    """Connect to the configured cluster or start a local one. Returns True if it is local.

    A local Ray's workers inherit this process's environment (quiet settings included), so no
    ``runtime_env`` is passed: one would stop Ray from handing clients its pre-started workers
    (about 4 s more start-up here). On a cluster, the quiet settings travel as ``env_vars``;
    paralab must be installed on every node (``pip install -e .`` in the same environment).
    """
    import ray

    common: dict[str, Any] = dict(logging_level=logging.ERROR, log_to_driver=False)
    address = ray_address(cfg)
    if ray.is_initialized():
        ray.shutdown()
    if address:
        env = {k: v for k, v in QUIET_ENV.items() if k != "WANDB_SILENT"}
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, **common)
        except Exception as error:
            raise ConfigError(
                f"paradigm.ray_address={address!r}: cannot connect to a Ray cluster there "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                "Start one with `ray start --head` and pass its address, or unset it"
            ) from None
        return False
    ray.init(num_cpus=cfg.ray_num_cpus or os.cpu_count(), include_dashboard=False, **common)
    return True


def check_fits(cfg) -> int:
    """Fail early when no Ray node can host one client. Returns how many run at once."""
    import ray

    res = cfg.client_resources
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fits = sum(
        min(
            int(n.get("CPU", 0) // res.num_cpus),
            int(n.get("GPU", 0) // res.num_gpus) if res.num_gpus else 10**9,
        )
        for n in nodes
    )
    if fits < 1:
        gpus = sum(n.get("GPU", 0) for n in nodes)
        cpus = max((n.get("CPU", 0) for n in nodes), default=0)
        raise ConfigError(
            f"paradigm.client_resources (num_cpus={res.num_cpus}, num_gpus={res.num_gpus}) "
            f"fits on no Ray node (largest node: {cpus:g} CPUs; cluster GPUs: {gpus:g}). "
            "Lower client_resources or add nodes"
        )
    return fits


def simulate(
    server_app,
    client_app,
    cfg,
    abort: threading.Event,
    server_done: threading.Event,
    describe_abort: Callable[[str], None],
) -> None:
    """Run the apps on Ray; raise what the ServerApp raised; always shut Ray down.

    Flower's engine waits for every client call in flight before it returns, so a hung client
    would hold the run forever after the server gave up: the watchdog tears Ray down when the
    engine has not stopped ``GRACE_S`` after the server, or after ``timeout_s``.
    """
    from flwr.simulation import run_simulation

    quiet_flower()
    start_ray(cfg)
    done = threading.Event()

    def watchdog() -> None:
        deadline = time.monotonic() + cfg.timeout_s + GRACE_S
        while not done.is_set():
            if server_done.wait(0.2) or time.monotonic() > deadline:
                if not server_done.is_set():
                    describe_abort(f"paradigm.timeout_s={cfg.timeout_s:g} s passed")
                    abort.set()
                if not done.wait(GRACE_S):
                    kill_busy_clients()  # the engine's threads wait on them; killing frees them
                if not done.wait(GRACE_S):
                    stop_ray(wait_s=2.0)
                return

    guard = threading.Thread(target=watchdog, name="paralab-fl-watchdog", daemon=True)
    try:
        check_fits(cfg)
        guard.start()
        res = cfg.client_resources
        backend = {
            "client_resources": {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus},
            "init_args": {"logging_level": logging.ERROR, "log_to_driver": False},
        }
        try:
            with fast_dispatch():
                run_simulation(
                    server_app=server_app,
                    client_app=client_app,
                    num_supernodes=cfg.num_clients,
                    backend_config=backend,
                )
        except (FederatedRunError, ConfigError):
            raise
        except Exception as error:
            cause = error.__cause__ or error
            describe_abort(f"the simulation engine failed: {cause}")
            abort.set()
            raise FederatedRunError(
                f"the Flower simulation engine failed: {type(cause).__name__}: {cause}"
            ) from error
    except KeyboardInterrupt:  # Ctrl-C in the engine: free its threads before Ray goes away
        describe_abort("interrupted")
        abort.set()
        server_done.wait(GRACE_S)
        kill_busy_clients()
        time.sleep(1.0)
        raise
    finally:
        abort.set()
        done.set()
        stop_ray()


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


def kill_busy_clients() -> int:
    """Kill the Ray actors that are still running a client call (hung or too slow).

    Flower keeps its actor pool inside the engine's call frame, with no handle outside; it is
    found among live objects instead. ``ray.get`` on a killed actor raises at once, which lets
    the engine's threads finish, on a local Ray and on a cluster alike.
    """
    import gc

    import ray
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    killed = 0
    for pool in [o for o in gc.get_objects() if isinstance(o, BasicActorPool)]:
        for actor in list(pool._future_to_actor.values()):
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
                killed += 1
    return killed


def stop_ray(wait_s: float = 10.0) -> None:
    """``ray.shutdown()``, then wait for the processes this run started (a local Ray's raylet,
    GCS and workers are children of this process) and kill any that linger."""
    import psutil
    import ray

    children = psutil.Process().children(recursive=True)
    if ray.is_initialized():
        ray.shutdown()
    _, alive = psutil.wait_procs(children, timeout=wait_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=2)
