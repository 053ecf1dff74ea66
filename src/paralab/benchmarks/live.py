"""The live table of a parallel suite: each run queued, running (its last line of output),
done (the headline metric and wall time), failed or skipped (why).

On a terminal the table is redrawn in place, so several runs' progress does not interleave;
elsewhere (CI logs, a file) one line is written each time a run changes state, and each run's
full output is in ``<suite folder>/logs/<run>.log``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from paralab.platform.progress import say

WIDTH = 100  # characters of a row on a terminal


@dataclass
class RunState:
    status: str = "queued"  # queued | running | completed | failed | interrupted | skipped
    metric: float | None = None
    note: str = ""  # running: the last line of output; failed: why
    wall_time_s: float | None = None


class LiveTable:
    def __init__(self, names: list[str], metric: str, stream=None) -> None:
        self.names, self.metric = names, metric
        self.states = {n: RunState() for n in names}
        self.started: dict[str, float] = {}
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.drawn = 0
        self.redraw()

    def set(self, name: str, state: RunState) -> None:
        """A run changed state: a line off a terminal, the table redrawn on one."""
        if state.status == "running":
            self.started[name] = time.monotonic()
        self.states[name] = state
        if not self.tty:
            i = self.names.index(name) + 1
            say(f"[{i}/{len(self.names)}] {name}: {self.cell(name)}")
        self.redraw()

    def progress(self, lines: dict[str, str]) -> None:
        """The running runs' last lines of output."""
        for name, line in lines.items():
            if self.states[name].status == "running":
                self.states[name].note = line
        self.redraw()

    def cell(self, name: str) -> str:
        s = self.states[name]
        if s.status == "completed":
            value = "—" if s.metric is None else f"{s.metric:.4f}"
            wall = "" if s.wall_time_s is None else f" ({s.wall_time_s:.0f} s)"
            return f"completed, {self.metric} {value}{wall}"
        if s.status == "running":
            elapsed = time.monotonic() - self.started.get(name, time.monotonic())
            return (
                f"running {elapsed:.0f} s" + (f": {s.note}" if s.note else "")
                if self.tty
                else "running"
            )
        return s.status + (f": {s.note}" if s.note else "")

    def counts(self) -> str:
        tally: dict[str, int] = {}
        for s in self.states.values():
            tally[s.status] = tally.get(s.status, 0) + 1
        return ", ".join(f"{v} {k}" for k, v in tally.items())

    def redraw(self) -> None:
        if not self.tty:
            return
        width = max(len(n) for n in self.names)
        rows = [f"{n:<{width}}  {self.cell(n)}"[:WIDTH] for n in self.names]
        rows.append(f"-- {self.counts()}")
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        self.stream.write(up + "".join(f"\x1b[2K{r}\n" for r in rows))
        self.stream.flush()
        self.drawn = len(rows)

    def close(self) -> None:
        if not self.tty:
            say(f"suite: {self.counts()}")
