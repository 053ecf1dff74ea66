"""Where and with what a parallel suite's runs go: each run's command and resources, and the Ray
they run on (a local one for the suite, or a cluster), connected and checked before the suite
folder exists.

How a user picks: ``paralab bench <suite>`` runs its runs one after another in one process (one
device, nothing to set up: the default). ``--parallel N`` runs up to N at once, each in its own
process: two on a 2-core laptop, one per GPU on a GPU node (``resources: {num_gpus: 1}``), or
many on a cluster (``--ray-address`` or ``$RAY_ADDRESS``). See :mod:`.parallel`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from paralab.benchmarks.parallel import Job, check_fits, run_jobs
from paralab.benchmarks.references import MARK

ADDRESS_KEY = "--ray-address"


class SuitePlacement:
    """A context manager: Ray connected (or started) for the suite, every run's job built and
    checked to fit; :meth:`run` runs them; leaving stops a local Ray and reaps its processes."""

    def __init__(self, folder: Path, suite, prepared, parallel: int, address: str | None) -> None:
        from paralab.strategies.federated.local_ray import LocalRay, check_address

        self.folder, self.suite, self.prepared, self.parallel = folder, suite, prepared, parallel
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.key = ADDRESS_KEY if address else "$RAY_ADDRESS" if self.address else "a local Ray"
        if self.address:
            check_address(self.address, self.key)
        self.local = None if self.address else LocalRay()

    def __enter__(self) -> SuitePlacement:
        from paralab.strategies.federated.local_ray import connect, stop_ray

        try:
            connect(self.address, self.key, self.local, None)
            self.jobs = {run.name: self._job(run, config) for run, config in self._pairs()}
            check_fits(list(self.jobs.values()))
        except BaseException:
            stop_ray(self.local)
            raise
        return self

    def __exit__(self, *exc) -> None:
        from paralab.strategies.federated.local_ray import stop_ray

        stop_ray(self.local)

    def run(self, latest_folder, summary_of) -> list[dict[str, Any]]:
        """Every selected run's summary, in suite order: a completed run's kept as it is, the
        others run (continued from their folder if they have one)."""
        kept, jobs = {}, []
        for run, _ in self._pairs():
            previous = latest_folder(self.folder, run.name)
            summary = summary_of(previous) if previous is not None else None
            if summary is not None and summary.get("status") == "completed":
                kept[run.name] = summary
            else:
                job = self.jobs[run.name]
                if previous is not None:
                    job.argv, job.needs = ["--resume", str(previous)], []
                jobs.append(job)
        metric = self.suite.compare.metric
        done = run_jobs(self.folder, jobs, self.parallel, metric,
                        lambda name: latest_folder(self.folder, name), summary_of,
                        self.address)  # fmt: skip
        return [kept.get(run.name) or done[run.name] for run in self.prepared.runs]

    def _pairs(self):
        return zip(self.prepared.runs, self.prepared.configs, strict=True)

    def _job(self, run, config) -> Job:
        """``paralab run <experiment> <overrides>`` into the suite folder under the run's name,
        ``@run`` references as placeholders filled when it starts, with its resources."""
        resources = self._resources(run, config)
        overrides = [_placeholder(o) for o in self.prepared.overrides[run.name]]
        overrides += [f"output_dir={self.folder}", f"name={run.name}"]
        own_ray = "ray_num_cpus" in config.plain["paradigm"] and not self.address
        if own_ray and config.paradigm.ray_num_cpus is None:  # its local Ray gets its share only
            overrides.append(f"paradigm.ray_num_cpus={max(1, int(resources['num_cpus']))}")
        names = {r.name for r in self.prepared.runs}
        needs = [ref.run for ref in self.prepared.refs.get(run.name, []) if ref.run in names]
        describe = {"paradigm": config.paradigm.name, "model": config.model.name,
                    "dataset": config.data.name}  # fmt: skip
        job = Job(run.name, [run.experiment, *overrides], resources, needs, describe)
        if self.address and "client_resources" in config.plain["paradigm"]:
            from paralab.strategies.federated.placement import client_bundle, clients_at_once

            job.clients = [client_bundle(config.paradigm)] * clients_at_once(config.paradigm)
        return job

    def _resources(self, run, config) -> dict[str, float]:
        """The run's Ray request (see :class:`~paralab.benchmarks.suite_file.Resources`)."""
        mine, suite = run.resources, self.suite.resources

        def pick(key: str):
            value = getattr(mine, key) if mine is not None else None
            return value if value is not None else getattr(suite, key)

        devices = config.trainer.devices
        count = len(devices) if isinstance(devices, list | tuple) else devices
        count = int(count) if str(count).isdigit() else 1
        gpu = str(config.trainer.accelerator) in ("gpu", "cuda")
        share = 1 if self.address else max(1, (os.cpu_count() or 1) // self.parallel)
        cpus = pick("num_cpus") or (share if gpu else max(share, count))
        gpus = pick("num_gpus")
        request = {"num_cpus": cpus, "num_gpus": gpus if gpus is not None else (count * gpu)}
        if pick("memory_gb"):
            request["memory"] = pick("memory_gb") * 2**30
        return request


def _placeholder(override: str) -> str:
    """``key=@run`` as ``key={folder:run}`` (see :func:`.parallel.folder_of_item`)."""
    key, sep, value = override.partition("=")
    if sep and value.startswith(MARK) and len(value) > 1:
        return f"{key}={{folder:{value[len(MARK) :]}}}"
    return override
