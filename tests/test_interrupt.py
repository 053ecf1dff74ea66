"""Ctrl-C under every paradigm: the run ends within seconds, its folder says ``interrupted`` with a
``--resume`` hint, the exit code is 130, and no process it started is left. Also a closed stdout
(``paralab list | head -1``) ends quietly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from paralab.platform.interrupts import sigint_is_interrupt
from tests.processes import read_lines, session_processes, wait_for

EXIT_WITHIN_S = 20.0

# (experiment + overrides long enough to still be training, the stderr line after which to stop)
LONG_RUNS = {
    "supervised": (["quickstart_offline", "trainer.max_epochs=200"], r"^epoch 1/200"),
    "continual": (["quickstart_continual", "trainer.max_epochs=40"], r"experience 1/5"),
}


def _start(args: list[str], out: Path) -> subprocess.Popen:
    """``paralab run`` in its own session with default tracking (wandb offline), as a user runs it:
    Ctrl-C in a terminal signals the whole foreground process group, so the test does the same."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    command = [sys.executable, "-m", "paralab", "run", *args, f"output_dir={out}",
               "trainer.progress_bar=false"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)  # fmt: skip


@pytest.mark.parametrize("paradigm", sorted(LONG_RUNS))
def test_ctrl_c_ends_a_run_as_interrupted_with_exit_130(paradigm, tmp_path):
    args, started = LONG_RUNS[paradigm]
    process = _start(args, tmp_path)
    try:
        stderr = read_lines(process.stderr)
        before = wait_for(stderr, started, timeout=240)
        children = psutil.Process(process.pid).children(recursive=True)
        signalled = time.perf_counter()
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(timeout=60)
        seconds = time.perf_counter() - signalled
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    after = "".join(before) + "".join(iter(lambda: stderr.get(timeout=5), None))
    print(f"\n{paradigm}: Ctrl-C to exit {seconds:.2f} s, exit code {code}")

    assert code == 130, after
    assert seconds < EXIT_WITHIN_S
    assert "Traceback" not in after
    (run_dir,) = [p for p in tmp_path.iterdir() if (p / "summary.json").is_file()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["error"].startswith("KeyboardInterrupt")
    assert f"paralab run --resume {run_dir}" in after
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {[p.name() for p in alive]}"
    assert not session_processes(process.pid)


def test_lightning_style_exit_after_ctrl_c_is_an_interrupt():
    """Lightning answers KeyboardInterrupt with SIG_IGN and sys.exit(1): both are undone."""
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), sigint_is_interrupt():
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            sys.exit(1)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_ctrl_c_that_python_discards_in_a_gc_callback_is_delivered_again():
    """A handler's KeyboardInterrupt raised inside a garbage-collector callback is dropped by
    Python ("Exception ignored in ..."); the run must still stop."""
    import gc

    fired: list[bool] = []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):  # the handler runs here, inside the callback
                pass

    gc.callbacks.append(callback)
    try:
        with pytest.raises(KeyboardInterrupt), sigint_is_interrupt():
            gc.collect()
            assert fired
            for _ in range(10**7):  # the second delivery lands here
                pass
            pytest.fail("the Ctrl-C raised in the gc callback was lost")
    finally:
        gc.callbacks.remove(callback)


def test_an_exit_without_ctrl_c_stays_an_exit():
    with pytest.raises(SystemExit) as raised, sigint_is_interrupt():
        sys.exit(3)
    assert raised.value.code == 3


def test_a_closed_stdout_ends_quietly():
    """`paralab list | head -1`: the reader goes away; no traceback, exit 141 (128 + SIGPIPE)."""
    for unbuffered in ("", "1"):  # Python's usual block buffering, then PYTHONUNBUFFERED=1
        env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
        command = [sys.executable, "-m", "paralab", "list"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        process.stdout.close()  # before paralab writes: every write meets a closed pipe
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 141
        assert stderr == b""
