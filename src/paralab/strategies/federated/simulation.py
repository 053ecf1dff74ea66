"""A federated run's session on the engine (:mod:`.engine`): Ray, the client actors, the server
loop; and the warm engine that a suite keeps between its federated runs.

Lifecycle rules, and where each is kept:

- :func:`federated_session` starts (or reuses) the engine and has its actors build the run's
  state at once, while the run builds its server side; :func:`serve` runs the server loop in
  this thread, so a Ctrl-C lands here: the run aborts, the clients still computing are killed,
  the engine is closed and the interrupt goes on to the runner;
- only the processes a local Ray started are waited for and killed
  (:class:`.local_ray.LocalRay`), never a process the run found running (wandb's service, a
  user's Ray cluster); a reaper process (:mod:`.reaper`) kills them if this process dies, even
  by ``kill -9``;
- Ray's auto-``init`` is off while a session is open (:func:`.flower_compat.no_auto_init`): a
  stray Ray call raises instead of starting a second local Ray;
- a client that hangs holds its actor only until its round's ``paradigm.round_timeout_s`` (or
  the run's ``timeout_s``); the actor is killed and replaced when the run ends;
- inside :func:`warm_engine` (a suite), the engine survives a run that ended normally and serves
  the next federated run with the same Ray settings and client resources: Ray is not started
  again, the workers have imported torch, and they only take the new run's config and data.
  Measured in the README ("Speed").
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from paralab.errors import ConfigError
from paralab.strategies.federated.engine import FederatedEngine
from paralab.strategies.federated.flower_compat import no_auto_init, server_identity
from paralab.strategies.federated.local_ray import (
    LocalRay,
    check_fits,
    ray_address,
    start_ray,
    stop_ray,
)
from paralab.strategies.federated.placement import client_slots, placement_name
from paralab.strategies.federated.server import FederatedRunError

log = logging.getLogger(__name__)


def quiet_flower() -> None:
    """Flower logs INFO lines and deprecation banners (strategies on construction); the round
    loop reports what matters itself (one line per round, errors by reason)."""
    logging.getLogger("flwr").setLevel(logging.CRITICAL)
    for name in ("ray", "ray.data", "ray.tune", "ray.rllib", "ray.serve", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


@dataclass
class _Held:
    """An engine and the local Ray it runs on (None: a cluster this process attached to)."""

    engine: FederatedEngine
    local: LocalRay | None


_held: _Held | None = None  # the engine kept between runs inside warm_engine()
_keep_warm = 0  # how many warm_engine() blocks are open


def engine_key(cfg) -> tuple:
    """What a warm engine must match to serve a run: the Ray it is on, the clients' size and
    the placement group they are reserved in."""
    res = cfg.client_resources
    return (ray_address(cfg), cfg.ray_num_cpus, res.num_cpus, res.num_gpus, placement_name())


@contextlib.contextmanager
def warm_engine() -> Iterator[None]:
    """Keep the federated engine (Ray and its client workers) between the runs inside; it stops
    when the outermost block ends."""
    global _keep_warm
    _keep_warm += 1
    try:
        yield
    finally:
        _keep_warm -= 1
        if _keep_warm == 0:
            _close_held()


def _close_held() -> None:
    global _held
    held, _held = _held, None
    if held is not None:
        with no_auto_init():
            held.engine.close()
            stop_ray(held.local)


def _start(cfg) -> _Held:
    """Ray (local or the configured cluster) and an engine sized to what fits on it."""
    local = None if ray_address(cfg) else LocalRay()
    group, bundles, name = None, [], placement_name()
    try:
        start_ray(cfg, local)
        if name:  # a parallel suite on a cluster reserved the clients' bundles
            group, bundles = client_slots(name, cfg)
            log.info("clients in Ray placement group %s: %d bundles", name, len(bundles))
        fits = len(bundles) if name else check_fits(cfg)
    except BaseException:
        stop_ray(local)
        raise
    res = cfg.client_resources
    engine = FederatedEngine(engine_key(cfg), fits, res.num_cpus, res.num_gpus, group, bundles)
    return _Held(engine, local)


def _acquire(cfg) -> tuple[_Held, bool]:
    """The warm engine when it matches ``cfg``, else a new one. Returns it and whether warm."""
    import ray

    global _held
    if _held is not None and _held.engine.key == engine_key(cfg) and ray.is_initialized():
        held, _held = _held, None
        return held, True
    _close_held()
    return _start(cfg), False


@contextlib.contextmanager
def federated_session(cfg, plain: dict, data: Any, app: Any, run_key: str) -> Iterator[Any]:
    """The engine for one run, its actors already building the run's state (torch, data,
    model) while the caller builds the server side. Kept warm afterwards inside
    :func:`warm_engine` when the run ended normally; otherwise stopped."""
    global _held
    quiet_flower()
    started = time.perf_counter()
    with no_auto_init():  # until the session ends: a stray Ray call must not start a Ray
        held, warm = _acquire(cfg)
        held.engine.session_started = started
        log.debug("federated engine: %s", "warm" if warm else "started")
        ended = False
        try:
            held.engine.prepare(run_key, app, plain, data, cfg.num_clients)
            yield held.engine
            ended = True
        finally:
            held.engine.finish_run()
            if ended and _keep_warm > 0:
                _held = held
            else:
                held.engine.close()
                stop_ray(held.local)


def serve(engine: FederatedEngine, loop: Any, cfg, abort) -> None:
    """Run the server loop on ``engine``'s grid, here. Ctrl-C: abort, kill the busy clients,
    re-raise. A Ray failure (its processes gone) becomes a :class:`FederatedRunError`."""
    import ray

    grid = engine.grid(cfg.num_clients)
    loop.created = engine.session_started  # start-up counts Ray and the engine too
    with server_identity(time.time_ns() % 2**63):
        try:
            loop.run(grid)
        except KeyboardInterrupt:
            log.info("Ctrl-C: stopping the federated run")
            loop.stopped_at = "interrupted"
            abort.set()
            engine.kill_busy()
            raise
        except (FederatedRunError, ConfigError):
            raise
        except ray.exceptions.RaySystemError as error:
            abort.set()
            raise FederatedRunError(
                f"the Ray engine failed: {type(error).__name__}: {error}"
            ) from error
