"""paralab's federated runs beside the same simulation written with plain Flower.

:mod:`tools.overhead.flower_plain` is the plain-Flower side (``NumPyClient``, ``FedAvg``,
``run_simulation`` on Ray; the same model, images, partition and optimizer), run in a process of
its own. This module holds what :mod:`tools.overhead.federated` uses for ``--plain-flower`` (a
warm round and the start-up beside paralab's) and ``--end-to-end`` (whole runs as a user starts
them, each a process of its own, timed from start to exit).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from tools.overhead.common import alternating
from tools.overhead.federated import TRAIN_IMAGES, RoundEnds, federation, simulated


def child(command: list[str], timeout: float) -> dict:
    """Run ``command`` in a process of its own (its own Ray): its last JSON line on stdout, with
    ``process_wall_s``, start to exit. A failure raises with the end of its output."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise RuntimeError(f"{' '.join(command[:3])} ... failed ({done.returncode}):\n{tail}")
    return json.loads(lines[-1]) | {"process_wall_s": wall}


def plain_flower(per_client: int, clients: int, per_round: int, rounds: int, scheme: str,
                 extra=(), timeout: float = 7200) -> dict:  # fmt: skip
    """The same simulation in plain Flower (:mod:`tools.overhead.flower_plain`), on the same
    Ray CPUs and client resources as ``COMMON``; its figures and ``process_wall_s``."""
    command = [
        sys.executable, "-m", "tools.overhead.flower_plain", f"--per-client={per_client}",
        f"--clients={clients}", f"--per-round={per_round}", f"--rounds={rounds}",
        f"--scheme={scheme}", "--num-cpus=2", "--client-cpus=1", *extra,
    ]  # fmt: skip
    return child(command, timeout)


def paralab_child(out: str, overrides: list[str]) -> None:
    """In a process of its own (:func:`paralab_process`): one run, its figures as a JSON line."""
    import psutil

    ends = RoundEnds()
    sim = simulated(overrides, out, ends)
    start = psutil.Process().create_time()
    print(json.dumps(sim | {"from_process_start_to_round1_s": ends.at[1] - start}), flush=True)


def paralab_process(overrides: list[str], out: str, timeout: float = 7200) -> dict:
    """A whole paralab run in a process of its own, as ``paralab run`` would start it."""
    code = "import sys; from tools.overhead.federated_vs_flower import paralab_child; "
    code += "paralab_child(sys.argv[1], sys.argv[2:])"
    return child([sys.executable, "-c", code, out, *overrides], timeout)


def beside_flower(row: dict, sim: dict, fl: dict, concurrency: int) -> dict:
    """Plain Flower's figures, measured as paralab's are: the warm round (median after the
    first) against the same ideal parallel compute and against its clients' own compute; start-up
    to the end of round 1 from the engine's start (paralab: its server loop's creation; Flower:
    ``run_simulation``'s call; both with inputs loaded and the initial model built; Flower has
    no start-up of its own to report apart: its round 1 includes Ray's start); the run's wall
    time (paralab: the paradigm's run; Flower: ``run_simulation``, Ray's shutdown included)."""
    warm = statistics.median(fl["round_s"][1:])
    in_actor = statistics.median(fl["compute_s"][1:]) / concurrency
    return {
        "to_round1_s": sim["startup_s"] + sim["first_round_s"],
        "flower_warm_round_s": warm, "flower_ratio": warm / row["ideal_parallel_s"],
        "flower_ratio_vs_in_actor_compute": warm / in_actor,
        "warm_round_vs_flower": row["warm_round_s"] / warm,
        "flower_to_round1_s": fl["to_round1_s"], "flower_run_wall_s": fl["run_s"],
        "flower_from_process_start_to_round1_s": fl["from_process_start_to_round1_s"],
        "flower_process_wall_s": fl["process_wall_s"],
    }  # fmt: skip


def end_to_end(
    size: int, clients: int, per_round: int, rounds: int, out: str, scheme: str, extra=(),
    repeat: int = 0,
) -> dict:  # fmt: skip
    """Whole runs as a user starts them, each in a process of its own: ``clients`` clients of
    ``size`` images, ``per_round`` a round, ``rounds`` rounds; paralab's and plain Flower's wall
    time from process start to exit (imports, data, Ray, every round, shutdown)."""
    overrides = [*federation(clients, per_round, rounds, size, scheme), *extra]
    done = alternating({
        "paralab": lambda: paralab_process(overrides, out),
        "flower": lambda: plain_flower(size, clients, per_round, rounds, scheme, extra),
    }, repeat)  # fmt: skip
    pl, fl = done["paralab"], done["flower"]
    return {
        "clients": clients, "per_client": size, "per_round": per_round, "rounds": rounds,
        "scheme": scheme, "paralab_wall_s": pl["process_wall_s"],
        "flower_wall_s": fl["process_wall_s"],
        "wall_ratio": pl["process_wall_s"] / fl["process_wall_s"],
        "paralab_warm_round_s": statistics.median(pl["round_s"][1:]),
        "flower_warm_round_s": fl["warm_round_s"],
        "paralab_to_round1_s": pl["from_process_start_to_round1_s"],
        "flower_to_round1_s": fl["from_process_start_to_round1_s"],
    }  # fmt: skip


def e2e_scheme(choice: str, size: int, clients: int) -> str:
    if choice != "auto":
        return choice
    return "sampled" if size * clients > TRAIN_IMAGES else "iid"
