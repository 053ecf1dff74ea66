"""Kill the local Ray a paralab run started when that run's process dies, even by ``kill -9``.

A local Ray's GCS and raylet die with the driver (Ray sets a parent-death signal on them), but the
raylet's own children (dashboard and runtime-env agents, workers) are re-parented and live on for
minutes. The driver starts this script before ``ray.init`` (in its own session, so a Ctrl-C at the
terminal does not reach it) with the driver's pid and the pids of the children it already had
(wandb's service, ...). Protocol, one line each on stdin:

- until ``ready``, every new child of the driver is taken to be Ray's (GCS, raylet, monitors);
  after it, only those and their descendants are followed (polled every 0.5 s, so the workers
  and agents the raylet starts later are known before their parent can die);
- ``stop <seconds>``: the driver shut Ray down; give its processes that long to exit;
- end of input (the driver closed the pipe, or died): kill whatever is left of them.

Nothing else is ever touched: not the driver's other children, not a Ray cluster the run only
connected to (no reaper is started then). It runs as a script, ``python -I reaper.py``, with the
standard library and psutil only, so it starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time

import psutil

POLL_S = 0.5


class Watch:
    """The driver's Ray processes found so far, as psutil handles (safe against pid reuse)."""

    def __init__(self, driver: psutil.Process, known: set[int]) -> None:
        self.driver, self.known = driver, known
        self.procs: dict[int, psutil.Process] = {}
        self.adopting = True
        self.grace_s = 0.0
        self.closed = threading.Event()
        self.lock = threading.Lock()  # the reader thread ends adoption while the poller runs

    def refresh(self) -> None:
        """Take the driver's new children (while adopting) and every descendant of a tracked
        process into the watch."""
        with self.lock:
            self._collect()

    def _collect(self) -> None:
        """One scan of the driver's descendants and their parents (a tree walk from each tracked
        process scanned every process once per tracked one: 4 % of a core, a third of the
        orchestration CPU of a 60-image federated round); a tracked process that is no longer
        under the driver (its parent died) is scanned on its own."""
        try:
            under = {proc.pid: proc for proc in self.driver.children(recursive=True)}
        except psutil.Error:  # the driver is gone: only the orphans' scans below
            under = {}
        parent: dict[int, int] = {}
        for pid, proc in under.items():
            with contextlib.suppress(psutil.Error):
                parent[pid] = proc.ppid()
        if self.adopting:
            for pid, ppid in parent.items():
                if ppid == self.driver.pid and pid not in self.known:
                    self.procs.setdefault(pid, under[pid])
        grown = True
        while grown:  # down the tree, whatever order the scan listed it in
            grown = False
            for pid, ppid in parent.items():
                if ppid in self.procs and pid not in self.procs:
                    self.procs[pid], grown = under[pid], True
        for pid, proc in list(self.procs.items()):
            if pid not in under:
                with contextlib.suppress(psutil.Error):
                    for child in proc.children(recursive=True):
                        self.procs.setdefault(child.pid, child)

    def read(self, stream) -> None:
        """Follow the driver's lines until the pipe closes."""
        for raw in stream:
            word, _, arg = raw.decode(errors="replace").strip().partition(" ")
            if word == "ready":  # the last adoption and its end, with no poll in between
                with self.lock:
                    self._collect()
                    self.adopting = False
            elif word == "stop":
                with contextlib.suppress(ValueError):
                    self.grace_s = float(arg)
        self.closed.set()

    def kill(self) -> None:
        """Wait up to ``grace_s`` for the watched processes to exit, then terminate, then kill."""
        alive = wait_gone(list(self.procs.values()), self.grace_s)
        for action, wait_s in (("terminate", 1.0), ("kill", 2.0)):
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    getattr(proc, action)()
            alive = wait_gone(alive, wait_s)


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still running after up to ``timeout`` s. A zombie counts as gone: these
    are not the reaper's children, so it cannot reap them (their parent, or init, does)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    driver_pid, *known = (int(a) for a in argv)
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return 0
    watch = Watch(driver, {*known, psutil.Process().pid})
    threading.Thread(target=watch.read, args=(sys.stdin.buffer,), daemon=True).start()
    while not watch.closed.wait(POLL_S):
        watch.refresh()
    watch.refresh()  # the last descendants (and, if the driver died in ray.init, its children)
    watch.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
