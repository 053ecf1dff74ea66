"""A suite's runs side by side on Ray (``paralab bench <suite> --parallel N``).

Each run is a ``paralab run`` process of its own, started and watched by a Ray task that holds
the run's resources (CPUs, GPUs, memory) for as long as the process lives. Why a process and
not the runner called inside the Ray worker: a DDP run re-launches its own command once per
rank, a federated run starts (or attaches to) a Ray of its own, and a crash (a segfault, the
OOM killer) must take down one run, not a worker that others depend on. A run in a parallel
suite is therefore exactly the run a user starts by hand, in the same kind of folder.

Placement: on this machine a local Ray is started for the suite (and stopped with it, its
processes reaped as a federated run's are); ``--ray-address`` or ``$RAY_ADDRESS`` attaches to
an existing cluster instead, whose nodes must share the suite folder (a network filesystem:
each run writes its folder where it runs). One run's resources are one Ray request, so a DDP run
gets all its devices at once or waits; it is never half-started. A federated run on a cluster
reserves its own process and its clients (as many as a round samples) as one placement group
(:mod:`paralab.strategies.federated.placement`): it starts whole or waits.

A run that fails, crashes or is killed becomes a row with its status; the others go on, and
``paralab bench --resume`` finishes what is missing. A run that starts from another's folder
(``@run``) waits for it, and is skipped if it did not complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paralab.benchmarks.groups import placed, release, run_bundle
from paralab.benchmarks.live import LiveTable, RunState
from paralab.errors import ConfigError

STOP_GRACE_S = 30.0  # after Ctrl-C: how long a run gets to save its state before it is killed
POLL_S = 0.5
LOGS = "logs"  # <suite folder>/logs/<run>.log: each run's output
#: Environment the driver hands every run (config layers, data and tracking settings).
PASSED_ENV = ("PARALAB_", "WANDB_", "HF_", "TORCH_HOME")

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One run of a parallel suite: its command (``argv`` after ``paralab run``; a
    ``{folder:<run>}`` item becomes that run's folder when the job starts), resources, and the
    runs whose folders it names."""

    name: str
    argv: list[str]
    resources: dict[str, float]
    needs: list[str] = field(default_factory=list)
    describe: dict[str, str] = field(default_factory=dict)  # paradigm, model, dataset
    #: a federated run's clients on a cluster: one Ray bundle each, reserved with the run's own
    #: resources as one placement group (see :mod:`paralab.strategies.federated.placement`)
    clients: list[dict[str, float]] = field(default_factory=list)


def run_jobs(
    folder: Path,
    jobs: list[Job],
    parallel: int,
    metric: str,
    folder_of: Callable[[str], Path | None],
    summary_of: Callable[[Path], dict[str, Any] | None],
    ray_address: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Run ``jobs`` at most ``parallel`` at a time on the connected Ray (the cluster at
    ``ray_address``, which federated runs inside then attach to, or a local one); returns each run's
    summary (a failed or skipped run's is written here: status, error, what it was)."""
    import ray

    (folder / LOGS).mkdir(exist_ok=True)
    board = ray.remote(Board).options(num_cpus=0).remote()
    remote = ray.remote(max_retries=0)(run_process)
    table = LiveTable([j.name for j in jobs], metric)
    names = {j.name for j in jobs}  # a needed run not among them finished before (resume)
    for job in jobs:
        job.needs = [n for n in job.needs if n in names]
    pending = {j.name: j for j in jobs}
    running: dict[Any, Job] = {}
    groups: dict[Any, Any] = {}  # a running job's placement group, removed when it ends
    results: dict[str, dict[str, Any]] = {}
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV)}
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    try:
        while pending or running:
            for job in _ready(pending, results, parallel - len(running)):
                del pending[job.name]
                argv = [folder_of_item(a, folder_of) for a in job.argv]
                label = f"{folder.name}/{job.name}"
                options, job_env, group = placed(label, job.resources, job.clients, env)
                ref = remote.options(**options).remote(
                    job.name, argv, job_env, str(folder / LOGS / f"{job.name}.log"), board
                )
                running[ref], groups[ref] = job, group
                table.set(job.name, RunState("running"))
            for job in _blocked(pending, results):
                del pending[job.name]
                results[job.name] = _skipped(job, results)
                table.set(job.name, _state(results[job.name], metric))
            done, _ = (
                ray.wait(list(running), num_returns=1, timeout=POLL_S) if running else ([], [])
            )
            for ref in done or ():
                job = running.pop(ref)
                results[job.name] = _outcome(job, ref, folder_of, summary_of)
                release(groups.pop(ref, None))
                table.set(job.name, _state(results[job.name], metric))
            table.progress(ray.get(board.lines.remote()))
    except KeyboardInterrupt:
        table.close()
        _stop(list(running))
        raise
    finally:
        for group in groups.values():
            release(group)
    table.close()
    return results


def folder_of_item(item: str, folder_of: Callable[[str], Path | None]) -> str:
    """``key={folder:<run>}`` becomes ``key=<that run's folder>``."""
    key, sep, value = item.partition("=")
    if sep and value.startswith("{folder:") and value.endswith("}"):
        found = folder_of(value[len("{folder:") : -1])
        return f"{key}={Path(found).resolve()}" if found else item
    return item


def _ready(pending: dict[str, Job], results: dict[str, dict], slots: int) -> list[Job]:
    """Jobs whose needed runs completed, in suite order, as many as there are free slots."""
    ok = [j for j in pending.values() if all(_completed(results.get(n)) for n in j.needs)]
    return ok[: max(0, slots)]


def _blocked(pending: dict[str, Job], results: dict[str, dict]) -> list[Job]:
    return [j for j in pending.values() if any(n in results and not _completed(results[n])
                                               for n in j.needs)]  # fmt: skip


def _completed(summary: dict[str, Any] | None) -> bool:
    return bool(summary) and summary.get("status") == "completed"


def _skipped(job: Job, results: dict[str, dict]) -> dict[str, Any]:
    failed = [n for n in job.needs if not _completed(results.get(n))]
    why = f"not run: it starts from {', '.join(failed)}, which did not complete"
    return {**job.describe, "name": job.name, "status": "skipped", "run_dir": None, "error": why}


def _outcome(job: Job, ref, folder_of, summary_of) -> dict[str, Any]:
    """The run's summary, or a failed one when the process left none (killed, crashed early)."""
    import ray

    try:
        code, last, node = ray.get(ref)
    except ray.exceptions.RayError as error:  # the worker itself died (OOM killer, node lost)
        code, last, node = None, f"{type(error).__name__}: {str(error).splitlines()[0]}", None
    run_dir = folder_of(job.name)
    summary = summary_of(run_dir) if run_dir is not None else None
    if code == 0 and _completed(summary):
        return {**summary, "node": node}
    why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    error = (summary or {}).get("error") or last or why
    status = (summary or {}).get("status")
    status = status if status in ("failed", "interrupted") else "failed"
    return {**job.describe, **(summary or {}), "name": job.name, "status": status, "node": node,
            "run_dir": str(run_dir) if run_dir else None, "error": f"{error} ({why})"}  # fmt: skip


def _state(summary: dict[str, Any], metric: str) -> RunState:
    if summary["status"] == "completed":
        return RunState("completed", summary.get("metrics", {}).get(metric),
                        wall_time_s=summary.get("wall_time_s"))  # fmt: skip
    return RunState(summary["status"], note=summary.get("error", ""))


def _stop(refs: list) -> None:
    """Ctrl-C: each running run gets SIGINT (it saves its state and marks itself interrupted),
    then the tasks are waited for; Ray goes after that."""
    import ray

    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref)  # raises KeyboardInterrupt inside run_process
    deadline = time.monotonic() + STOP_GRACE_S + 10
    while refs and time.monotonic() < deadline:
        with contextlib.suppress(KeyboardInterrupt):
            _, refs = ray.wait(refs, num_returns=len(refs), timeout=1.0)


def run_process(
    name: str, argv: list[str], env: dict[str, str], log_path: str, board
) -> tuple[int, str, str]:
    """Inside the Ray task: run ``paralab run <argv>`` with this task's devices and thread
    count, its output to ``log_path`` and its last line to the board; returns the exit code,
    the last line and the Ray node it ran on. A cancelled task (Ctrl-C at the suite) interrupts
    the run as Ctrl-C would."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    command = [sys.executable, "-m", "paralab", "run", *argv]
    last = ""
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=_child_env(env), start_new_session=True,
                                preexec_fn=_child_setup)  # fmt: skip
        try:
            for raw in proc.stdout:
                out.write(raw)
                out.flush()
                text = raw.decode(errors="replace").strip()
                if text:
                    last = text
                    board.say.remote(name, text)
            return proc.wait(), last, node
        except KeyboardInterrupt:
            _interrupt(proc)
            raise


def _interrupt(proc: subprocess.Popen) -> None:
    """Ctrl-C the run, once: it is in a session of its own, so a Ctrl-C at the terminal reaches
    it only through here. It gets ``STOP_GRACE_S`` to save its state (a second cancel does not
    cut that short), then it is killed."""
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(KeyboardInterrupt, subprocess.TimeoutExpired):
            proc.wait(0.2)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _child_env(passed: dict[str, str]) -> dict[str, str]:
    """This worker's environment (its ``CUDA_VISIBLE_DEVICES``: the GPUs Ray gave the task)
    with the driver's paralab settings, torch threads set to the task's CPUs, and no address
    of the suite's own Ray: a federated run inside starts its own, or attaches to the cluster
    named by ``$RAY_ADDRESS`` in the driver."""
    import ray

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(passed)  # on a cluster: its RAY_ADDRESS
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    env["OMP_NUM_THREADS"] = str(max(1, int(cpus)))
    return env


def _child_setup() -> None:
    """In the run's process before it starts: Ctrl-C delivered again (Ray's workers ignore and
    block SIGINT, and both survive ``exec``: the run never saw the interrupt it was sent) and,
    on Linux, SIGTERM when the worker that watches it dies (``ray stop``, a lost node), so no
    run is left computing for nobody."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Board:
    """A Ray actor: each running run's last line of output, for the live table."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def say(self, name: str, line: str) -> None:
        self.last[name] = line

    def lines(self) -> dict[str, str]:
        return dict(self.last)


def check_fits(jobs: list[Job]) -> None:
    """Every run's request fits on one node of the connected Ray, or the suite stops before its
    folder exists (a run that fits nowhere would wait forever)."""
    import ray

    from paralab.strategies.federated.placement import check_total

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for job in jobs:
        need = run_bundle(job.resources)
        if job.clients:
            check_total(job.name, [need, *job.clients])
        if not any(all(n.get(k, 0) >= v for k, v in need.items()) for n in nodes):
            largest = {k: max((n.get(k, 0) for n in nodes), default=0) for k in need}
            raise ConfigError(
                f"run {job.name} asks for {_fmt(need)}, which no Ray node has (largest: "
                f"{_fmt(largest)}). Lower its resources: in the suite file, or run fewer at once "
                "(--parallel)"
            )


def _fmt(resources: dict[str, float]) -> str:
    def one(k: str, v: float) -> str:
        return f"{v / 2**30:g} GB memory" if k == "memory" else f"{v:g} {k}"

    return ", ".join(one(k, v) for k, v in resources.items()) or "nothing"
