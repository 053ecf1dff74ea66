"""The federated simulation's overhead: a warm round's wall time against ideal parallel compute.

For each client size, a ``paradigm=federated`` run on a local Ray (Fashion-MNIST, ``cnn``, every
client trains in every round, no evaluation inside the round) is measured against the same
clients' local training run one after another in this plain process, divided by the number of
clients that run at once (Ray CPUs / ``client_resources.num_cpus``). Rounds after the first are
"warm"; start-up (Ray, workers, data, to the first round) is reported on its own. Repeats
alternate which of the two goes first. ``--scale`` instead runs each of ``--scale-clients``
clients with 10 per round, sampling the memory of the whole process tree (PSS, so shared
libraries count once); ``--scale-scheme sampled`` gives each client its own draw of
``--per-client`` images (clients may outnumber the images), ``iid`` splits
``per_client * clients`` images. The rows go to ``runs/overhead/federated.json``
(``--output``).

``--plain-flower`` runs, beside each size, the same simulation written with plain Flower
(:mod:`tools.overhead.flower_plain`: ``NumPyClient``, ``FedAvg``, ``run_simulation`` on Ray; the
same model, images, partition and optimizer) in a process of its own, and reports for both the
warm round, its ratio to the same ideal parallel compute, the start-up to the end of round 1
(both from the engine's start: inputs loaded, initial model built) and the run's wall time.
``--end-to-end`` instead runs whole runs as a user starts them, each in a process of its own:
``--e2e-clients`` clients, ``--clients`` per round, ``--e2e-rounds`` rounds, each size of
``--sizes``; the process wall times (start to exit) of paralab and plain Flower and their ratio
(both in :mod:`tools.overhead.federated_vs_flower`). ``--warm RUNS`` runs RUNS runs per size one
after another on one engine kept warm, as a sequential suite keeps it: the first run's start to
the end of its round 1 is the cold start, the others' the warm start; plain Flower's (always
cold: every simulation starts Ray) beside them. Run from the repository root::

    python -m tools.overhead.federated [--sizes 600 60] [--repeats 2] [key=value ...]
    python -m tools.overhead.federated --plain-flower [--sizes 600 60] [--repeats 2]
    python -m tools.overhead.federated --warm 3 [--sizes 600 60] [--repeats 2]
    python -m tools.overhead.federated --end-to-end [--e2e-clients 1000] [--e2e-rounds 100] \
        [--sizes 600 60] [--repeats 1]
    python -m tools.overhead.federated --scale [--scale-clients 100 1000]
    python -m tools.overhead.federated --scale --scale-scheme sampled --per-client 60 \
        --repeats 1 --rounds 4 --scale-clients 1000 10000 100000
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tools.overhead.common import alternating, parser, summarize, write_json

COMMON = [
    "tracking.wandb=disabled",
    "trainer.progress_bar=false",
    "paradigm.fraction_evaluate=0",
    "paradigm.centralized_eval=false",
    "paradigm.client_resources.num_cpus=1",
    "paradigm.ray_num_cpus=2",
    "paradigm.local_epochs=1",
]
TRAIN_IMAGES = 54_000  # Fashion-MNIST's training split (60,000 less 10 % validation)


def round_rows(run_dir: str) -> list[dict[str, float]]:
    with (Path(run_dir) / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("time/round_s")]
    return [{k: float(v) for k, v in r.items() if v} for r in rows]


class RoundEnds:
    """A ``paralab.run`` callback: the wall clock (``time.time()``) at the end of each round."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def on_round_end(self, rnd: int, metrics: dict) -> None:
        self.at.setdefault(rnd, time.time())


def simulated(overrides: list[str], out: str, ends: RoundEnds | None = None) -> dict:
    """One federated run; per-round wall times, client compute, start-up."""
    import paralab

    summary = paralab.run("fashion_mnist_federated", [*COMMON, *overrides, f"output_dir={out}"],
                          callbacks=[ends] if ends else None)  # fmt: skip
    rows = round_rows(summary["run_dir"])
    return {
        "round_s": [r["time/round_s"] for r in rows],
        "train_s": [r["time/train_s"] for r in rows],
        "compute_s": [r["time/client_compute_s"] for r in rows],
        "startup_s": summary["metrics"]["time/startup_s"],
        "first_round_s": summary["metrics"].get("time/first_round_s"),
        "wall_s": summary["wall_time_s"],
    }


def sequential_round_s(overrides: list[str], rounds: list[int], num_threads: int) -> list[float]:
    """The same clients' local training, one after another in this process, per round."""
    import torch
    from flwr.app import ArrayRecord

    from paralab.platform.config import load
    from paralab.strategies.federated.client import train_client, worker_state

    torch.set_num_threads(num_threads)
    config = load("fashion_mnist_federated", [*COMMON, *overrides])
    state = worker_state(f"plain-{time.time_ns()}", config.plain)
    torch.set_num_threads(num_threads)
    arrays = ArrayRecord(state.model.state_dict())
    train_client(state, 0, 0, arrays, {})  # warm-up, like the simulation's first round
    times = []
    for rnd in rounds:
        started = time.perf_counter()
        for cid in range(config.paradigm.num_clients):
            train_client(state, cid, rnd, arrays, {})
        times.append(time.perf_counter() - started)
    return times


def overhead(
    size: int, clients: int, rounds: int, out: str, extra=(), repeat: int = 0, flower: bool = False
) -> dict:
    """paralab's warm round against ideal parallel compute; with ``flower``, plain Flower's too."""
    overrides = [
        f"paradigm.num_clients={clients}", f"paradigm.min_train_clients={clients}",
        "paradigm.fraction_train=1.0", f"paradigm.rounds={rounds}",
        f"data.train_limit={size * clients}", *extra,
    ]  # fmt: skip
    concurrency = 2  # ray_num_cpus / client num_cpus
    plain_rounds = list(range(2, min(rounds, 3) + 1))
    runs = {
        "simulated": lambda: simulated(overrides, out),
        "plain": lambda: sequential_round_s(overrides, plain_rounds, num_threads=1),
    }
    if flower:
        from tools.overhead.federated_vs_flower import plain_flower

        runs["flower"] = lambda: plain_flower(size, clients, clients, rounds, "iid", extra)
    done = alternating(runs, repeat)
    sim, plain = done["simulated"], done["plain"]
    row = {
        "samples_per_client": size, "clients_per_round": clients, "concurrency": concurrency,
        **ratios(sim, plain, concurrency), "startup_s": sim["startup_s"],
        "first_round_s": sim["first_round_s"], "run_wall_s": sim["wall_s"],
    }  # fmt: skip
    if flower:
        from tools.overhead.federated_vs_flower import beside_flower

        row |= beside_flower(row, sim, done["flower"], concurrency)
    return row


def warm_startup(size: int, clients: int, rounds: int, runs: int, out: str, extra=(),
                 flower: bool = True) -> list[dict]:  # fmt: skip
    """``runs`` runs one after another on one engine kept warm (as a sequential suite keeps
    it): the first starts Ray and the client workers (cold), the others find them up (warm).
    Per run: start-up (the engine's start to round 1's), round 1, start to the end of round 1,
    and the warm round; with ``flower``, plain Flower's start to the end of round 1 for the same
    clients (it has no warm engine: every simulation starts Ray)."""
    import paralab

    overrides = [
        f"paradigm.num_clients={clients}", f"paradigm.min_train_clients={clients}",
        "paradigm.fraction_train=1.0", f"paradigm.rounds={rounds}",
        f"data.train_limit={size * clients}", *extra,
    ]  # fmt: skip
    rows = []
    with paralab.warm("federated"):
        for i in range(runs):
            sim = simulated([*overrides, f"seed={i}"], out)
            rows.append({
                "samples_per_client": size, "run": i + 1, "engine": "warm" if i else "cold",
                "startup_s": sim["startup_s"], "first_round_s": sim["first_round_s"],
                "to_round1_s": sim["startup_s"] + sim["first_round_s"],
                "warm_round_s": statistics.median(sim["round_s"][1:]),
            })  # fmt: skip
    if flower:
        from tools.overhead.federated_vs_flower import plain_flower

        fl = plain_flower(size, clients, clients, rounds, "iid", extra)
        for row in rows:
            row["flower_to_round1_s"] = fl["to_round1_s"]
    return rows


def ratios(sim: dict, plain_round_s: list[float], concurrency: int) -> dict[str, float]:
    """A warm round (the median after the first) against the ideal: the plain sequential round
    divided by the clients running at once; and against the clients' own compute inside the
    actors (orchestration alone, immune to the plain run seeing a different CPU share on a
    machine shared with others)."""
    warm = statistics.median(sim["round_s"][1:])
    ideal = statistics.median(plain_round_s) / concurrency
    in_actor = statistics.median(sim["compute_s"][1:]) / concurrency
    figures = {
        "warm_round_s": warm, "warm_train_phase_s": statistics.median(sim["train_s"][1:]),
        "ideal_parallel_s": ideal, "ratio": warm / ideal,
        "in_actor_parallel_s": in_actor, "ratio_vs_in_actor_compute": warm / in_actor,
    }  # fmt: skip
    return figures


class TreeMemory:
    """Peak PSS (and RSS) summed over this process and all its descendants, sampled."""

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.peak_pss, self.peak_rss = every, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.every):
            pss = rss = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    info = proc.memory_full_info()
                    pss, rss = pss + info.pss, rss + info.rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def federation(clients: int, per_round: int, rounds: int, per_client: int, scheme: str) -> list:
    """Overrides for ``clients`` clients of ``per_client`` images, ``per_round`` of them a round:
    ``iid`` splits ``per_client * clients`` images, ``sampled`` gives each its own draw."""
    if scheme == "sampled":
        data = ["paradigm.partition.scheme=sampled",
                f"paradigm.partition.samples_per_client={per_client}"]  # fmt: skip
    else:
        data = [f"data.train_limit={per_client * clients}"]
    return [
        f"paradigm.num_clients={clients}", f"paradigm.min_train_clients={per_round}",
        f"paradigm.fraction_train={per_round / clients}", f"paradigm.rounds={rounds}", *data,
    ]  # fmt: skip


def scale(
    num_clients: int, rounds: int, out: str, per_client: int = 54, extra=(), scheme: str = "iid"
) -> dict:
    """10 clients per round out of ``num_clients``, each holding ``per_client`` images, so that
    a round's work is the same whatever the number of clients."""
    overrides = [*federation(num_clients, 10, rounds, per_client, scheme), *extra]
    with TreeMemory() as mem:
        sim = simulated(overrides, out)
    warm = statistics.median(sim["round_s"][1:])
    return {
        "clients": num_clients, "scheme": scheme, "per_client": per_client, "per_round": 10,
        "warm_round_s": warm, "startup_s": sim["startup_s"],
        "first_round_s": sim["first_round_s"], "run_wall_s": sim["wall_s"],
        "peak_pss_gb": mem.peak_pss / 2**30, "peak_rss_sum_gb": mem.peak_rss / 2**30,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=2, output="runs/overhead/federated.json")
    p.add_argument("--sizes", type=int, nargs="+", default=[600, 60], help="images per client")
    p.add_argument("--clients", type=int, default=10, help="clients per round")
    p.add_argument("--rounds", type=int, default=5, help="per run; the first is warm-up")
    p.add_argument("--scale", action="store_true", help="round time and memory against clients")
    p.add_argument("--scale-clients", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--scale-scheme", choices=["iid", "sampled"], default="iid")
    p.add_argument("--per-client", type=int, default=54, help="--scale: images per client")
    p.add_argument("--plain-flower", action="store_true",
                   help="beside each size, the same simulation in plain Flower")  # fmt: skip
    p.add_argument("--end-to-end", action="store_true",
                   help="whole runs, paralab against plain Flower, per size")  # fmt: skip
    p.add_argument(
        "--warm",
        type=int,
        default=0,
        metavar="RUNS",
        help="start-up: RUNS runs per size on one warm engine; plain Flower beside",
    )
    p.add_argument("--e2e-clients", type=int, default=1000, help="--end-to-end: clients in all")
    p.add_argument("--e2e-rounds", type=int, default=100, help="--end-to-end: rounds")
    p.add_argument("--e2e-scheme", choices=["auto", "iid", "sampled"], default="auto",
                   help=f"auto: sampled if clients x size > {TRAIN_IMAGES:,}")  # fmt: skip
    args = p.parse_args(argv)
    if min(args.rounds, args.e2e_rounds) < 2:
        p.error("--rounds, --e2e-rounds: at least 2 (the first is warm-up)")
    os.environ.setdefault("WANDB_MODE", "disabled")
    if args.plain_flower:  # Ray's import is the plain script's imports_s; not paralab's start-up
        import flwr.simulation  # noqa: F401
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as out:
        for repeat in range(args.repeats):
            if args.scale:
                new = [scale(n, args.rounds, out, args.per_client, args.overrides,
                             args.scale_scheme) for n in args.scale_clients]  # fmt: skip
            elif args.warm:
                new = [row for s in args.sizes for row in warm_startup(
                    s, args.clients, args.rounds, args.warm, out, args.overrides)]  # fmt: skip
            elif args.end_to_end:
                from tools.overhead.federated_vs_flower import e2e_scheme, end_to_end

                new = [end_to_end(s, args.e2e_clients, args.clients, args.e2e_rounds, out,
                                  e2e_scheme(args.e2e_scheme, s, args.e2e_clients),
                                  args.overrides, repeat) for s in args.sizes]  # fmt: skip
            else:
                new = [overhead(s, args.clients, args.rounds, out, args.overrides, repeat,
                                args.plain_flower) for s in args.sizes]  # fmt: skip
            for row in new:
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                  for k, v in row.items()}), flush=True)  # fmt: skip
            rows += new
    summary = {}
    if args.end_to_end:
        for size in args.sizes:
            print(f"{size} images per client, paralab / plain Flower wall time:", end=" ")
            same = [row for row in rows if row["per_client"] == size]
            summary[str(size)] = summarize(same, ["wall_ratio"])
    elif args.warm:
        for size in args.sizes:
            same = [row for row in rows if row["samples_per_client"] == size]
            for engine in ("cold", "warm"):
                print(f"{size} samples per client, {engine} engine, start to end of round 1:",
                      end=" ")  # fmt: skip
                chosen = [row for row in same if row["engine"] == engine]
                summary[f"{size} {engine}"] = summarize(chosen, ["to_round1_s"]) if chosen else {}
    elif not args.scale:
        keys = ["ratio", "flower_ratio"] if args.plain_flower else ["ratio"]
        for size in args.sizes:
            print(f"{size} samples per client:", end="\n" if args.plain_flower else " ")
            same = [row for row in rows if row["samples_per_client"] == size]
            figures = summarize(same, keys)
            summary[str(size)] = figures if args.plain_flower else figures["ratio"]
    write_json(args.output, rows, summary)


if __name__ == "__main__":
    main()
