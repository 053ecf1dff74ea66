"""Helpers for tests that run ``paralab`` as a user does, in a process of its own, and stop it."""

from __future__ import annotations

import os
import queue
import re
import threading
import time

import psutil
import pytest


def read_lines(stream) -> queue.Queue:
    """The stream's lines, read in a thread so that waiting for one can time out; None at EOF."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def wait_for(lines: queue.Queue, pattern: str, timeout: float) -> list[str]:
    """Every line up to the first one matching ``pattern``; fails the test if the run ends
    first."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or not re.search(pattern, seen[-1]):
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            pytest.fail(f"the run ended before {pattern!r}:\n{''.join(seen)}")
        seen.append(line)
    return seen


def session_processes(session: int) -> list[psutil.Process]:
    """Every live process of ``session`` (a run started with ``start_new_session=True``: its
    children and theirs). Zombies count as gone: a killed orphan stays one until init reaps it."""
    alive = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def no_ray_left() -> bool:
    """Whether the test process has no child left (a run's local Ray, its reaper)."""
    return not psutil.Process().children(recursive=True)


def stable(metrics: dict) -> dict:
    """A summary's metrics without the timings and memory figures, which vary run to run."""
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "memory/"))}


class StopAfterRound:
    """A run callback that interrupts a federated run after round ``last`` (as Ctrl-C would)."""

    def __init__(self, last: int) -> None:
        self.last = last

    def on_round_end(self, rnd: int, metrics: dict) -> None:
        if rnd == self.last:
            raise KeyboardInterrupt
