"""What the overhead measurements share: their options, a clock, the alternating repeats, the
ratio figures and the JSON they write. The plain PyTorch loops they measure against stay in each
script, written out by hand on purpose: they are the baselines."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def parser(doc: str, *, repeats: int, output: str | None = None) -> argparse.ArgumentParser:
    """``--repeats``, ``--output`` (the figures as JSON; ``None``: not written) and the config
    ``key=value`` overrides every measurement takes; the script adds its own options."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--output", default=output, help=f"write the figures to this JSON file "
                   f"(default: {output or 'not written'})")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data=digits")
    return p


class Clock:
    """Wall time and this process's CPU time, summed over every ``with`` block. On a shared
    machine other processes stretch the wall time of whichever run they overlap; with one torch
    thread the CPU time is the work done."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def alternating(runs: Mapping[str, Callable[[], T]], repeat: int) -> dict[str, T]:
    """Every run once: in the given order on even repeats, reversed on odd ones, so that load
    drifting on the machine hits every side alike. The results keep the given order."""
    names = list(runs) if repeat % 2 == 0 else list(reversed(list(runs)))
    done = {name: runs[name]() for name in names}
    return {name: done[name] for name in runs}


def ratio_stats(ratios: Iterable[float]) -> dict[str, float]:
    """Median, mean, spread and range of a ratio over the repeats; every ratio must be a finite
    positive number (a zero or NaN time is a broken measurement, not a figure)."""
    values = list(ratios)
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"not a set of finite positive ratios: {values}")
    return {
        "median": statistics.median(values),
        "mean": statistics.mean(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "repeats": len(values),
    }


def describe(stats: Mapping[str, float]) -> str:
    return (
        f"median {stats['median']:.3f}, mean {stats['mean']:.3f} ± {stats['stdev']:.3f} "
        f"(min {stats['min']:.3f}, max {stats['max']:.3f}, {stats['repeats']} repeats)"
    )


def summarize(rows: list[dict], keys: Iterable[str]) -> dict[str, dict[str, float]]:
    """``ratio_stats`` of each of ``keys`` over the rows, printed one line each."""
    summary = {key: ratio_stats(row[key] for row in rows) for key in keys}
    for key, stats in summary.items():
        print(f"{key}: {describe(stats)}", flush=True)
    return summary


def write_json(path: str | None, rows: list[dict], summary: dict) -> None:
    """``{"rows": [...], "summary": {...}}`` to ``path`` (folders made); nothing if ``None``."""
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")
    print(out)
