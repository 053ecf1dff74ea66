"""Flower's simulation engine for one federated run: the ServerApp in a thread of this process,
the ClientApps in Ray actors, on the Ray that :mod:`.local_ray` starts or connects to.

Lifecycle rules, and where each is kept:

- the engine runs in a thread of its own (:class:`Engine`), so Ctrl-C lands in the main thread
  and never inside Flower's shutdown sequence, which it used to cut short (Flower then called
  ``ray.shutdown()`` under threads blocked in ``ray.get``, and the interpreter waited on those
  threads forever);
- after Ctrl-C the run aborts, busy clients are killed so the engine's threads return, and only
  then is Ray shut down; Ray's auto-``init`` is off meanwhile
  (:func:`.flower_compat.no_auto_init`), so a late Ray call raises instead of starting a second
  local Ray;
- only the processes a local Ray started are waited for and killed
  (:class:`.local_ray.LocalRay`), never a process the run found running (wandb's service, a
  user's Ray cluster); a reaper process (:mod:`.reaper`) kills them if this process dies, even
  by ``kill -9``;
- a watchdog stops a run that outlives its timeout.

What reaches into Flower's or Ray's internals is kept in :mod:`.flower_compat`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from paralab.errors import ConfigError
from paralab.strategies.federated.flower_compat import (
    actor_pools,
    fast_dispatch,
    kill_busy_clients,
    no_auto_init,
    no_idle_telemetry,
)
from paralab.strategies.federated.local_ray import (
    LocalRay,
    check_fits,
    ray_address,
    start_ray,
    stop_ray,
)
from paralab.strategies.federated.server import FederatedRunError

GRACE_S = 10.0  # how long the engine gets to stop after the server did, before Ray is torn down
INTERRUPT_GRACE_S = 10.0  # after Ctrl-C: how long the engine gets to return before Ray goes

log = logging.getLogger(__name__)


def quiet_flower() -> None:
    """Flower logs ~50 INFO lines and a deprecation banner per run, and a traceback per failed
    client; the round loop reports all of that itself (one line per round, errors by reason)."""
    logging.getLogger("flwr").setLevel(logging.CRITICAL)
    for name in ("ray", "ray.data", "ray.tune", "ray.rllib", "ray.serve", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


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
