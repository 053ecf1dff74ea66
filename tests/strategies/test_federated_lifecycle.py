"""A federated run's life from start to end, as a user lives it.

Each test runs the digits quickstart with 2 clients on a local Ray: with default tracking (wandb
offline: the run must not harm the tracker's service), stopped by Ctrl-C (the whole process
group, as a terminal sends it) or by ``kill -9`` (nothing of its Ray may outlive it), pointed at
a cluster address where nothing listens, and with a learning rate that makes the loss NaN.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from paralab.cli import main
from tests.processes import read_lines, wait_for

SMALL = ["paradigm.num_clients=2", "paradigm.fraction_evaluate=0"]
LONG = [*SMALL, "paradigm.rounds=50"]  # still running when the test stops it


def cli(out: Path, *overrides: str) -> subprocess.Popen:
    """``paralab run quickstart_federated`` in a session of its own, stderr piped."""
    command = [sys.executable, "-m", "paralab", "run", "quickstart_federated", *overrides,
               f"output_dir={out}"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def wait_for_round(lines: queue.Queue, timeout: float = 240.0) -> list[str]:
    """Every line up to the first round's, which shows that Ray and the clients are up."""
    return wait_for(lines, r"^round 1/", timeout)


def drain(lines: queue.Queue) -> str:
    text = []
    while (line := lines.get(timeout=30)) is not None:
        text.append(line)
    return "".join(text)


def left_behind(session: int, driver: int) -> list[str]:
    """Live processes of the run's session (Ray's included), and the run's reaper (a session
    of its own, named by the driver's pid on its command line)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "name"]):
        try:
            cmd = proc.info["cmdline"] or []
            script = next((i for i, c in enumerate(cmd) if c.endswith("reaper.py")), None)
            reaper = script is not None and cmd[script + 1 : script + 2] == [str(driver)]
            if proc.status() != psutil.STATUS_ZOMBIE and (os.getsid(proc.pid) == session or reaper):
                found.append(f"{proc.pid} {proc.info['name']}")
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (a killed orphan stays a zombie until init reaps it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def survivors(procs: list[psutil.Process], within: float) -> list[psutil.Process]:
    deadline = time.monotonic() + within
    while (alive := [p for p in procs if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def none_left_within(session: int, driver: int, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while (alive := left_behind(session, driver)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return alive


def run_dir(out: Path) -> Path:
    (folder,) = out.iterdir()
    return folder


def summary(out: Path) -> dict:
    return json.loads((run_dir(out) / "summary.json").read_text(), parse_constant=refuse)


def refuse(constant: str):
    raise ValueError(f"summary.json holds {constant}, which is not JSON")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_wandb_tracking_survives_the_run(tmp_path, monkeypatch):
    """wandb's service is a child of the run too: cleaning up Ray must leave it alone."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    proc = cli(tmp_path, *SMALL, "paradigm.rounds=2", "tracking.wandb=offline")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "ConnectionResetError" not in err
    assert summary(tmp_path)["status"] == "completed"
    (offline_run,) = (run_dir(tmp_path) / "wandb").glob("offline-run-*")
    (records,) = offline_run.glob("*.wandb")
    assert records.stat().st_size > 0


def test_ctrl_c_ends_the_run_in_seconds_as_interrupted(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    proc = cli(tmp_path, *LONG)
    lines = read_lines(proc.stderr)
    wait_for_round(lines)
    os.killpg(proc.pid, signal.SIGINT)
    stopped = time.monotonic()
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the run did not exit within 30 s of Ctrl-C")
    took = time.monotonic() - stopped
    err = drain(lines)
    assert code == 130, err[-3000:]
    assert "paralab: interrupted" in err
    assert "Started a local Ray" not in err  # no second Ray after the interrupt
    assert summary(tmp_path)["status"] == "interrupted"
    assert none_left_within(proc.pid, proc.pid, 10) == []
    print(f"exit {took:.1f} s after Ctrl-C")


def test_kill_9_takes_the_local_ray_down_with_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    proc = cli(tmp_path, *LONG)
    lines = read_lines(proc.stderr)
    wait_for_round(lines)
    ray_procs = psutil.Process(proc.pid).children(recursive=True)
    assert any(p.name() == "raylet" for p in ray_procs)
    proc.kill()
    proc.wait(timeout=10)
    assert none_left_within(proc.pid, proc.pid, 20) == []


FAKE_DRIVER = """
import subprocess, sys, time
from paralab.strategies.federated.local_ray import LocalRay
sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
service = subprocess.Popen(sleep)  # already there, like wandb's service
local = LocalRay()
raylet = subprocess.Popen([sys.executable, "-c", f"import subprocess; subprocess.run({sleep!r})"])
time.sleep(0.5)
local.started()
print(service.pid, raylet.pid, flush=True)
time.sleep(120)
"""


def test_the_reaper_kills_only_what_the_run_started():
    """A stand-in driver: a child from before its 'ray.init' (must live on) and one started
    during it, with a child of its own (both must die with the driver, even by kill -9)."""
    driver = subprocess.Popen([sys.executable, "-c", FAKE_DRIVER], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    service = None
    try:
        service, raylet = (psutil.Process(int(pid)) for pid in driver.stdout.readline().split())
        time.sleep(1.5)  # the reaper polls every 0.5 s
        (worker,) = raylet.children()
        driver.kill()
        driver.wait(timeout=10)
        assert survivors([raylet, worker], within=10) == []
        assert running(service)
    finally:
        driver.kill()
        if service is not None:
            service.kill()


def test_an_unreachable_cluster_address_fails_at_once(tmp_path, capsys):
    address = f"127.0.0.1:{closed_port()}"
    started = time.monotonic()
    code = main(["run", "quickstart_federated", *SMALL, f"paradigm.ray_address={address}",
                 "tracking.wandb=disabled", f"output_dir={tmp_path}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert time.monotonic() - started < 30
    assert f"paradigm.ray_address='{address}'" in err and "ray start --head" in err
    assert list(tmp_path.iterdir()) == []


def test_a_placement_group_without_a_cluster_is_an_input_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PARALAB_PLACEMENT_GROUP", "suite/run/1")
    code = main(["run", "quickstart_federated", *SMALL, "tracking.wandb=disabled",
                 f"output_dir={tmp_path}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "$PARALAB_PLACEMENT_GROUP names a Ray placement group" in err
    assert list(tmp_path.iterdir()) == []


def test_a_diverging_run_fails_and_names_the_round(tmp_path, capsys):
    code = main(["run", "quickstart_federated", *SMALL, "paradigm.rounds=3", "optim.lr=1e6",
                 "tracking.wandb=disabled", f"output_dir={tmp_path}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1, err[-3000:]
    assert "training diverged at round 1" in err
    assert "Traceback" not in err
    result = summary(tmp_path)  # valid JSON: no bare NaN
    assert result["status"] == "failed"
    assert result["error"].startswith("DivergedError: training diverged at round 1")
    assert not psutil.Process().children(recursive=True)


def test_the_flower_and_ray_internals_the_run_relies_on_are_still_there():
    """paralab.strategies.federated.flower_compat reaches into these (its docstring lists them);
    an upgrade that moves one fails here instead of silently bringing back a hang or a second
    Ray."""
    import ray
    from flwr.app import ConfigRecord, Message, RecordDict
    from ray._private import auto_init_hook

    from paralab.strategies.federated.flower_compat import (
        join_message,
        local_ray_system_config,
        server_identity,
        stamp_message_id,
    )

    assert isinstance(auto_init_hook.enable_auto_connect, bool), "Ray's auto-init switch moved"
    known = (Path(ray.__file__).parent / "includes" / "ray_config.pxd").read_text()
    for key in local_ray_system_config():  # an unknown key makes ray.init time out
        assert f" {key}()" in known, f"Ray no longer knows _system_config key {key}: drop it"
    with server_identity(7):  # Flower's TaskIdentity: a strategy's Message reads the sender
        message = Message(RecordDict(), dst_node_id=3, message_type="train")
    assert message.metadata.run_id == 7 and message.metadata.src_node_id == 1
    assert message.metadata.message_id == "", "Flower now ids messages itself: drop the stamp"
    stamped = stamp_message_id(message)
    assert stamped and message.metadata.message_id == stamped, "Flower's message id slot moved"
    reply = Message(RecordDict(), reply_to=message)
    assert reply.metadata.reply_to_message_id == stamped
    content = RecordDict({"config": ConfigRecord({"server-round": 2})})
    joined = join_message(message.metadata, content)
    assert joined.metadata.message_id == stamped and joined.content["config"]["server-round"] == 2
