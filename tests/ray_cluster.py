"""A Ray cluster started by a test: a head and a second node on this machine, one CPU each.

It is stopped afterwards by killing exactly the processes it started (found by its temp folder
and address), never with a machine-wide ``ray stop``.
"""

import contextlib
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def stop_cluster(marks: list[str]) -> None:
    me = psutil.Process().pid
    procs = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if proc.pid != me and any(m in line for m in marks):
            procs.append(proc)
            procs += proc.children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture
def two_node_cluster(tmp_path_factory):
    temp = str(tmp_path_factory.mktemp("ray"))
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    marks = [temp]
    try:
        head = subprocess.run(
            [RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
             f"--temp-dir={temp}", "--disable-usage-stats"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert head.returncode == 0, head.stderr[-2000:]
        address = re.search(r"ray start --address='([^']+)'", head.stdout + head.stderr).group(1)
        marks.append(address)
        node = subprocess.run([RAY, "start", f"--address={address}", "--num-cpus=1"],
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert node.returncode == 0, node.stderr[-2000:]
        yield address
    finally:
        stop_cluster(marks)
