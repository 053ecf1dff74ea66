"""Can this machine run clients side by side at full speed? The floor under the federated ratios.

``tools.overhead.federated`` divides the clients' sequential compute by the number that run at
once and calls that ideal parallel compute. That ideal holds only if two client loops on two
cores each run as fast as one alone (no shared-core or memory-bandwidth contention). This runs
the same plain client loop (:func:`paralab.strategies.federated.client.train_client`, one torch
thread) in one process, then in ``--processes`` processes started together, and reports each
one's time per client and the slowdown (mean time at once / time alone; 1.0: the ideal is
reachable). Run from the repository root::

    python -m tools.overhead.parallel_floor [--sizes 60 600] [--processes 2] [--repeats 2]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from tools.overhead.common import parser, write_json

COMMON = ["tracking.wandb=disabled", "paradigm.client_resources.num_cpus=1",
          "paradigm.num_clients=10", "paradigm.local_epochs=1"]  # fmt: skip


def loop(size: int, rounds: int, overrides: list[str]) -> None:
    """In a process of its own: build the worker state, say READY, wait for a line on stdin,
    train 10 clients of ``size`` images ``rounds`` times; print the time per client (ms)."""
    import time

    import torch
    from flwr.app import ArrayRecord

    from paralab.platform.config import load
    from paralab.strategies.federated.client import train_client, worker_state

    torch.set_num_threads(1)
    config = load("fashion_mnist_federated", [*COMMON, f"data.train_limit={size * 10}",
                                              *overrides])  # fmt: skip
    state = worker_state("floor", config.plain)
    torch.set_num_threads(1)
    arrays = ArrayRecord(state.model.state_dict())
    train_client(state, 0, 0, arrays, {})  # warm-up
    print("READY", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    for rnd in range(rounds):
        for cid in range(10):
            train_client(state, cid, rnd + 1, arrays, {})
    per_client = (time.perf_counter() - started) / (10 * rounds)
    print(json.dumps({"per_client_ms": per_client * 1000}), flush=True)


def together(count: int, size: int, rounds: int, overrides: list[str]) -> list[float]:
    """``count`` loops started at the same moment; each one's time per client (ms)."""
    code = "import sys, json; from tools.overhead.parallel_floor import loop; "
    code += "loop(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))"
    command = [sys.executable, "-c", code, str(size), str(rounds), json.dumps(overrides)]
    procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(count)]  # fmt: skip
    try:
        for proc in procs:
            while (line := proc.stdout.readline()) and line.strip() != "READY":
                pass
            if not line:
                raise RuntimeError("a client loop ended before it was ready")
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return [json.loads(proc.stdout.readline())["per_client_ms"] for proc in procs]
    finally:
        for proc in procs:
            proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=2, output="runs/overhead/parallel_floor.json")
    p.add_argument("--sizes", type=int, nargs="+", default=[60, 600], help="images per client")
    p.add_argument("--processes", type=int, default=2, help="loops at once")
    p.add_argument("--rounds", type=int, default=0, help="per loop (0: 10 for 60 images, ...)")
    args = p.parse_args(argv)
    rows = []
    for size in args.sizes:
        rounds = args.rounds or max(1, 600 // size)
        for _ in range(args.repeats):
            (alone,) = together(1, size, rounds, args.overrides)
            side_by_side = together(args.processes, size, rounds, args.overrides)
            row = {"per_client": size, "processes": args.processes, "alone_ms": alone,
                   "at_once_ms": side_by_side,
                   "slowdown": statistics.fmean(side_by_side) / alone}  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    summary = {str(s): [r["slowdown"] for r in rows if r["per_client"] == s] for s in args.sizes}
    write_json(args.output, rows, summary)


if __name__ == "__main__":
    main()
