"""Ray for one federated run: a local instance started and stopped by the run, or an existing
cluster (``paradigm.ray_address`` or ``$RAY_ADDRESS``, passed alone: adding ``num_cpus`` to an
address raises and can hang).

Only the processes a local Ray started are waited for and killed (:class:`LocalRay`), never a
process the run found running (wandb's service, a user's Ray cluster); a reaper process
(:mod:`.reaper`) kills them if this process dies, even by ``kill -9``.
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
from pathlib import Path
from typing import Any

from paralab.errors import ConfigError
from paralab.platform.quiet import QUIET_ENV
from paralab.strategies.federated.flower_compat import local_ray_system_config
from paralab.strategies.federated.placement import ENV, placement_name

CONNECT_TIMEOUT_S = 3.0  # a cluster address that accepts no TCP connection in this long is wrong
#: the Ray namespace of every paralab driver on a cluster: a parallel suite's named placement
#: groups are found by the runs it starts (see :mod:`.placement`)
NAMESPACE = "paralab"
REAPER = Path(__file__).with_name("reaper.py")

log = logging.getLogger(__name__)


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
    """Fail at once, before the run folder exists, when the cluster address is wrong (or a
    placement group is named for a run without one)."""
    address = ray_address(cfg)
    if address:
        check_address(address, _address_source(cfg))
    elif placement_name():
        raise ConfigError(
            f"${ENV} names a Ray placement group, which only a run on a Ray cluster can use "
            "(paradigm.ray_address or $RAY_ADDRESS). Unset it, or give the cluster's address"
        )


def check_address(address: str, key: str) -> None:
    """``address`` (set by ``key``) must be a Ray cluster that answers.

    ``ray.init(address=...)`` retries an address where no Ray listens for as long as it is left
    to (minutes, seen: forever), so a typo'd address hung the run. One TCP connect with a short
    timeout tells a dead address from a live one. ``auto`` and ``local`` are left to Ray: it
    resolves them itself and fails fast.
    """
    if address in ("auto", "local"):
        return
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
    """Connect to the configured cluster (``local`` is None) or start a local Ray."""
    connect(ray_address(cfg), _address_source(cfg), local, cfg.ray_num_cpus)


def connect(address: str | None, key: str, local: LocalRay | None, num_cpus: int | None) -> None:
    """Connect to the cluster at ``address`` (set by ``key``; ``local`` is None) or start a
    local Ray with ``num_cpus`` (None: all cores here).

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
        env = {k: v for k, v in QUIET_ENV.items() if k != "WANDB_SILENT"}
        try:
            ray.init(address=address, namespace=NAMESPACE, runtime_env={"env_vars": env}, **common)
        except Exception as error:
            raise ConfigError(
                f"{key}={address!r}: cannot connect to a Ray cluster there "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                "Start one with `ray start --head` and pass its address, or unset it"
            ) from None
        return
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        _system_config=local_ray_system_config(),
        **common,
    )
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
