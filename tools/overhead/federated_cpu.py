"""Where a warm federated round's CPU goes: the client actors, the driver, the raylet, the rest.

Why: the warm round of small clients sits well above ideal parallel compute (1.73-1.76x with 60
images per client, :mod:`tools.overhead.federated`), and the wall-clock ratios do not say which
process spends the difference. This runs one federated run in this process and reads the CPU
time (user + system) of every process of the tree at the end of round ``--from`` and of the last
round, grouped by kind; each figure is CPU seconds per warm round, beside the round's wall time
and the CPU seconds the Ray CPUs offer in it. The clients' own training is what
``tools.overhead.federated`` calls ideal parallel compute (times the clients at once). Run from
the repository root::

    python -m tools.overhead.federated_cpu [--per-client 60] [--clients 10] [--rounds 30]
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from tools.overhead.common import parser, summarize, write_json
from tools.overhead.federated import COMMON

KINDS = (("actors", "ClientWorker"), ("raylet", "raylet"), ("gcs", "gcs_server"))


def cpu_by_kind() -> dict[str, float]:
    """CPU seconds so far of this process (``driver``) and each kind of its descendants."""
    import psutil

    me = psutil.Process()
    totals = {"driver": 0.0, **{kind: 0.0 for kind, _ in KINDS}, "other": 0.0}
    for proc in [me, *me.children(recursive=True)]:
        try:
            line = " ".join(proc.cmdline()[:2])
            times = proc.cpu_times()
        except psutil.Error:
            continue
        kind = "driver" if proc.pid == me.pid else next(
            (k for k, mark in KINDS if mark in line), "other")  # fmt: skip
        totals[kind] += times.user + times.system
    return totals


class Marks:
    """A run callback: the wall clock and the tree's CPU at the end of the chosen rounds."""

    def __init__(self, rounds: tuple[int, int]) -> None:
        self.rounds, self.at = rounds, {}

    def on_round_end(self, rnd: int, metrics: dict) -> None:
        if rnd in self.rounds:
            self.at[rnd] = (time.perf_counter(), cpu_by_kind())


def cpu_split(per_client: int, clients: int, rounds: int, first: int, extra=()) -> dict:
    """One run of ``clients`` clients of ``per_client`` images, all in every round; the CPU
    seconds per warm round (rounds ``first + 1`` to ``rounds``) by kind of process."""
    import paralab

    marks = Marks((first, rounds))
    with tempfile.TemporaryDirectory() as out:
        paralab.run("fashion_mnist_federated", [
            *COMMON, f"paradigm.num_clients={clients}", f"paradigm.min_train_clients={clients}",
            "paradigm.fraction_train=1.0", f"paradigm.rounds={rounds}",
            f"data.train_limit={per_client * clients}", f"output_dir={out}", *extra,
        ], callbacks=[marks])  # fmt: skip
    (t0, before), (t1, after) = marks.at[first], marks.at[rounds]
    warm = rounds - first
    row = {k: (after[k] - before[k]) / warm for k in after}
    cpus = next(int(o.split("=")[1]) for o in [*COMMON, *extra] if "ray_num_cpus" in o)
    row["round_wall_s"] = (t1 - t0) / warm
    row["available_cpu_s"] = row["round_wall_s"] * cpus
    return {"per_client": per_client, "clients": clients, **row}


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=1, output="runs/overhead/federated_cpu.json")
    p.add_argument("--per-client", type=int, default=60, help="images per client")
    p.add_argument("--clients", type=int, default=10, help="clients, all in every round")
    p.add_argument("--rounds", type=int, default=30, help="rounds in all")
    p.add_argument("--from", dest="first", type=int, default=5, help="warm rounds start after it")
    args = p.parse_args(argv)
    if not 1 <= args.first < args.rounds:
        p.error("--from must be at least 1 and below --rounds")
    os.environ.setdefault("WANDB_MODE", "disabled")
    rows = []
    for _ in range(args.repeats):
        row = cpu_split(args.per_client, args.clients, args.rounds, args.first, args.overrides)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
        rows.append(row)
    keys = ["actors", "driver", "raylet", "round_wall_s"]
    write_json(args.output, rows, summarize(rows, keys) if len(rows) > 1 else {})


if __name__ == "__main__":
    main()
