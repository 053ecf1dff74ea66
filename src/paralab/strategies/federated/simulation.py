"""Ray for one federated run: a local instance started and stopped by the run, or an existing
cluster (``paradigm.ray_address`` or ``$RAY_ADDRESS``, passed alone: adding ``num_cpus`` to an
address raises and can hang). Flower's simulation engine then runs the ServerApp in a thread of
this process and the ClientApps in Ray actors.

Lifecycle rules (issue 15), and where each is kept:

- the engine runs in a thread of its own (:class:`Engine`), so Ctrl-C lands in the main thread
  and never inside Flower's shutdown sequence, which it used to cut short (Flower then called
  ``ray.shutdown()`` under threads blocked in ``ray.get``, and the interpreter waited on those
  threads forever);
- after Ctrl-C the run aborts, busy clients are killed so the engine's threads return, and only
  then is Ray shut down; Ray's auto-``init`` is off meanwhile (:func:`no_auto_init`), so a late
  Ray call raises instead of starting a second local Ray;
- only the processes a local Ray started are waited for and killed (:class:`LocalRay`), never a
  process the run found running (wandb's service, a user's Ray cluster); a reaper process
  (:mod:`.reaper`) kills them if this process dies, even by ``kill -9``;
- a watchdog stops a run that outlives its timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from paralab.errors import ConfigError
from paralab.platform.quiet import QUIET_ENV
from paralab.strategies.federated.server import FederatedRunError

GRACE_S = 10.0  # how long the engine gets to stop after the server did, before Ray is torn down
INTERRUPT_GRACE_S = 10.0  # after Ctrl-C: how long the engine gets to return before Ray goes
CONNECT_TIMEOUT_S = 3.0  # a cluster address that accepts no TCP connection in this long is wrong
REAPER = Path(__file__).with_name("reaper.py")

log = logging.getLogger(__name__)


def quiet_flower() -> None:
    """Flower logs ~50 INFO lines and a deprecation banner per run, and a traceback per failed
    client; the round loop reports all of that itself (one line per round, errors by reason)."""
    logging.getLogger("flwr").setLevel(logging.CRITICAL)
    for name in ("ray", "ray.data", "ray.tune", "ray.rllib", "ray.serve", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def ray_address(cfg) -> str | None:
    return cfg.ray_address or os.environ.get("RAY_ADDRESS") or None


def _address_source(cfg) -> str:
    return "paradigm.ray_address" if cfg.ray_address else "$RAY_ADDRESS"


def _host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` (also ``ray://host:port`` and ``[v6]:port``) split, or None if not that."""
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(cfg) -> None:
    """Fail at once, before the run folder exists, when the cluster address is wrong.

    ``ray.init(address=...)`` retries an address where no Ray listens for as long as it is left
    to (minutes, seen: forever), so a typo'd address hung the run. One TCP connect with a short
    timeout tells a dead address from a live one. ``auto`` and ``local`` are left to Ray: it
    resolves them itself and fails fast.
    """
    address = ray_address(cfg)
    if not address or address in ("auto", "local"):
        return
    key = _address_source(cfg)
    target = _host_port(address)
    if target is None:
        raise ConfigError(
            f"{key}={address!r}: not a Ray cluster address. Give host:port as printed by "
            "`ray start --head` (e.g. 10.0.0.5:6379), or unset it for a local Ray"
        )
    try:
        with socket.create_connection(target, timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        timed_out = isinstance(error, TimeoutError)
        reason = f"no answer in {CONNECT_TIMEOUT_S:g} s" if timed_out else error.strerror
        raise ConfigError(
            f"{key}={address!r}: no Ray cluster answers there ({reason or error}). Start one "
            f"with `ray start --head` and pass the address it prints, or unset {key} to run "
            "on a local Ray"
        ) from None


class LocalRay:
    """The processes of the local Ray this run starts, and their reaper.

    The processes a ``ray.init()`` starts (GCS, raylet, monitors) are the children this process
    gains during the call; the raylet starts the workers and agents below them. Only those are
    waited for and killed at the end: the children the run already had (wandb's service, which
    the tracker still needs) are never touched. The reaper (:mod:`.reaper`) follows the same
    processes from outside and kills them if this process dies first.
    """

    def __init__(self) -> None:
        import psutil

        me = psutil.Process()
        self.before = {child.pid for child in me.children()}
        self.roots: list[Any] = []
        self._stopped = threading.Lock()
        self.reaper = subprocess.Popen(
            [sys.executable, "-I", str(REAPER), str(me.pid), *map(str, sorted(self.before))],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the terminal must not stop it before us
        )

    def started(self) -> None:
        """After ``ray.init``: fix the set of Ray's processes (new children of this process)."""
        self.roots = self._new_children()
        self._tell("ready")

    def stop(self, wait_s: float) -> None:
        """After ``ray.shutdown()``: give Ray's processes ``wait_s`` to exit, kill the rest
        (the reaper does both), and reap the ones that were this process's children. A Ray
        whose ``ray.init`` was cut short (Ctrl-C) is not shut down by anyone: no waiting."""
        import psutil

        if not self._stopped.acquire(blocking=False):
            return  # the watchdog and the run's own clean-up may both get here
        if not self.roots:
            self.roots, wait_s = self._new_children(), 0.0
        self._tell(f"stop {wait_s:g}")
        with contextlib.suppress(OSError):
            self.reaper.stdin.close()
        try:
            self.reaper.wait(wait_s + 10)
        except subprocess.TimeoutExpired:
            log.warning("the Ray reaper (pid %d) did not finish; killing it", self.reaper.pid)
            self.reaper.kill()
            self.reaper.wait()
        psutil.wait_procs(self.roots, timeout=2)

    def _new_children(self) -> list[Any]:
        import psutil

        skip = self.before | {self.reaper.pid}
        return [c for c in psutil.Process().children() if c.pid not in skip]

    def _tell(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # the reaper died: nothing to tell
            self.reaper.stdin.write(f"{line}\n".encode())
            self.reaper.stdin.flush()


def start_ray(cfg, local: LocalRay | None) -> None:
    """Connect to the configured cluster (``local`` is None) or start a local Ray.

    A local Ray's workers inherit this process's environment (quiet settings included), so no
    ``runtime_env`` is passed: one would stop Ray from handing clients its pre-started workers
    (about 4 s more start-up here). On a cluster, the quiet settings travel as ``env_vars``;
    paralab must be installed on every node (``pip install -e .`` in the same environment).
    """
    import ray

    common: dict[str, Any] = dict(logging_level=logging.ERROR, log_to_driver=False)
    if ray.is_initialized():
        ray.shutdown()
    if local is None:
        address = ray_address(cfg)
        env = {k: v for k, v in QUIET_ENV.items() if k != "WANDB_SILENT"}
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, **common)
        except Exception as error:
            raise ConfigError(
                f"{_address_source(cfg)}={address!r}: cannot connect to a Ray cluster there "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                "Start one with `ray start --head` and pass its address, or unset it"
            ) from None
        return
    ray.init(num_cpus=cfg.ray_num_cpus or os.cpu_count(), include_dashboard=False, **common)
    local.started()


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


class Engine(threading.Thread):
    """Flower's ``run_simulation`` in a thread of its own; what it raised is kept for the caller.

    In the main thread, a Ctrl-C interrupted Flower's engine in the middle of its shutdown
    (joining its client threads), and its ``finally`` then shut Ray down under threads still
    blocked in ``ray.get``: the interpreter waited on them forever at exit. Here the signal
    reaches the main thread, which stops the run in order instead (:func:`_wait_or_interrupt`).

    The main thread waits on :attr:`finished`, never on ``join()``: a Ctrl-C that interrupts
    ``Thread.join`` makes CPython 3.11 mark the still-running thread as stopped (its
    ``_wait_for_tstate_lock`` releases the lock the live thread holds), after which
    ``is_alive()`` lies and Ray was shut down under the engine.
    """

    def __init__(self, server_app, client_app, cfg) -> None:
        super().__init__(name="paralab-fl-engine", daemon=True)
        self.apps, self.cfg = (server_app, client_app), cfg
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        from flwr.simulation import run_simulation

        res = self.cfg.client_resources
        backend = {
            "client_resources": {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus},
            "init_args": {"logging_level": logging.ERROR, "log_to_driver": False},
        }
        try:
            with fast_dispatch(), no_idle_telemetry():
                run_simulation(
                    server_app=self.apps[0],
                    client_app=self.apps[1],
                    num_supernodes=self.cfg.num_clients,
                    backend_config=backend,
                )
        except BaseException as error:
            self.error = error
        finally:
            self.finished.set()


def _wait_or_interrupt(engine: Engine, abort: threading.Event, describe_abort) -> None:
    """Wait for the engine; on Ctrl-C, stop the run (:func:`_wind_down`), then re-raise."""
    try:
        while not engine.finished.wait(0.1):
            pass
    except KeyboardInterrupt:
        log.info("Ctrl-C: stopping the federated run")
        describe_abort("interrupted")
        abort.set()
        started = time.monotonic()
        _wind_down(engine)
        log.debug("the engine stopped %.1f s after Ctrl-C", time.monotonic() - started)
        raise


def _wind_down(engine: Engine) -> None:
    """After an abort: let the engine return before anything shuts Ray down.

    The server loop stops within milliseconds of the abort, which stops Flower's threads once
    their client calls return; killing the clients still computing makes those ``ray.get``
    calls raise at once. Ray may go only after that. Further Ctrl-Cs meanwhile are absorbed:
    the wait is bounded by ``INTERRUPT_GRACE_S``.
    """
    deadline = time.monotonic() + INTERRUPT_GRACE_S
    pools: list = []
    while not engine.finished.is_set() and time.monotonic() < deadline:
        with contextlib.suppress(KeyboardInterrupt):
            pools = pools or actor_pools()
            kill_busy_clients(pools)
            engine.finished.wait(0.2)
    if not engine.finished.is_set():
        log.warning("the Flower engine did not stop %g s after Ctrl-C", INTERRUPT_GRACE_S)


def _watchdog(cfg, server_done, done, abort, describe_abort, stop) -> None:
    """Stop a run past ``timeout_s``, and free an engine still busy ``GRACE_S`` after the
    server stopped (Flower waits for every client call in flight: a hung client held the run)."""
    deadline = time.monotonic() + cfg.timeout_s + GRACE_S
    while not done.is_set():
        if server_done.wait(0.2) or time.monotonic() > deadline:
            if not server_done.is_set():
                describe_abort(f"paradigm.timeout_s={cfg.timeout_s:g} s passed")
                abort.set()
            if not done.wait(GRACE_S):
                kill_busy_clients()  # the engine's threads wait on them; killing frees them
            if not done.wait(GRACE_S):
                stop(2.0)
            return


def simulate(
    server_app,
    client_app,
    cfg,
    abort: threading.Event,
    server_done: threading.Event,
    describe_abort: Callable[[str], None],
) -> None:
    """Run the apps on Ray; raise what the ServerApp raised; always shut Ray down.

    Errors that are the run's own (:class:`FederatedRunError` and its kin, a ConfigError) come
    out as they are; anything else from the engine becomes a FederatedRunError.
    """
    quiet_flower()
    local = None if ray_address(cfg) else LocalRay()
    done = threading.Event()

    def stop(wait_s: float = 10.0) -> None:
        stop_ray(local, wait_s)

    guard = threading.Thread(
        target=_watchdog,
        args=(cfg, server_done, done, abort, describe_abort, stop),
        name="paralab-fl-watchdog",
        daemon=True,
    )
    engine = Engine(server_app, client_app, cfg)
    with no_auto_init():  # until Ray is gone: a late Ray call must not start another Ray
        try:
            start_ray(cfg, local)
            check_fits(cfg)
            guard.start()
            engine.start()
            _wait_or_interrupt(engine, abort, describe_abort)
            _raise_engine_error(engine.error, abort, describe_abort)
        finally:
            abort.set()
            done.set()
            stop()


def _raise_engine_error(error: BaseException | None, abort, describe_abort) -> None:
    if error is None:
        return
    if isinstance(error, (FederatedRunError, ConfigError)):
        raise error
    cause = error.__cause__ or error
    describe_abort(f"the simulation engine failed: {cause}")
    abort.set()
    raise FederatedRunError(
        f"the Flower simulation engine failed: {type(cause).__name__}: {cause}"
    ) from error


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


def stop_ray(local: LocalRay | None, wait_s: float = 10.0) -> None:
    """``ray.shutdown()`` (Flower's engine may have done it already), then, for a local Ray,
    wait for its processes and kill any that linger. Processes the run did not start are left
    alone: on a cluster nothing but the connection is closed."""
    import ray

    started = time.monotonic()
    if ray.is_initialized() or local is not None:  # also after a cut-short ray.init
        ray.shutdown()
    shutdown_s = time.monotonic() - started
    if local is not None:
        local.stop(wait_s)
    log.debug("Ray stopped: shutdown %.1f s, processes gone %.1f s later",
              shutdown_s, time.monotonic() - started - shutdown_s)  # fmt: skip
