"""Ctrl-C means one thing under every paradigm: the run stops, the caller sees KeyboardInterrupt.

Libraries catch Ctrl-C on their own terms. Lightning's Trainer catches KeyboardInterrupt, tears
down, sets SIGINT to "ignore" and calls ``sys.exit(1)`` (``lightning/pytorch/trainer/call.py``),
so a supervised run used to end as a failure (exit 1) while a continual one ended as an
interrupt (exit 130). Rather than special-casing each library, :func:`sigint_is_interrupt` wraps a
run: a SIGINT handler records that the user asked to stop (and raises KeyboardInterrupt as Python's
own handler does), and a ``SystemExit`` that escapes the run after such a signal is turned back into
the KeyboardInterrupt it was. The runner then records status ``interrupted`` and the CLI exits 130.

A signal handler runs at whatever bytecode the main thread is executing, and Python discards an
exception raised inside a garbage-collector callback or a ``__del__`` ("Exception ignored in
...": jax, which Avalanche's QP solvers import, registers such a callback). A Ctrl-C that lands
there was lost and the run went on to completion (seen once in ten runs under load). Such a
swallowed KeyboardInterrupt is delivered again, at the next ordinary bytecode.
"""

from __future__ import annotations

import _thread
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


@contextmanager
def sigint_is_interrupt() -> Iterator[None]:
    """While the block runs, Ctrl-C surfaces as KeyboardInterrupt, whatever a library made of it.

    The previous SIGINT handler is chained and restored afterwards (which also undoes Lightning's
    "ignore SIGINT"). Outside the main thread, or where SIGINT is ignored on purpose (a process
    started in the background), nothing is installed: signals cannot be handled there.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous in (
        signal.SIG_IGN,
        None,
    ):
        yield
        return
    received: list[bool] = []

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        received.append(True)
        if not callable(previous):  # SIG_DFL: Python's own handler was replaced by "terminate"
            raise KeyboardInterrupt
        previous(signum, frame)  # Python's default_int_handler raises KeyboardInterrupt

    unraisable = sys.unraisablehook

    def deliver_again(hook) -> None:
        if isinstance(hook.exc_value, KeyboardInterrupt) and received:
            log.debug("a Ctrl-C raised in %r was discarded by Python: delivered again", hook.object)
            # a moment later, from another thread: raised in this hook, it would be lost again
            timer = threading.Timer(0.01, _thread.interrupt_main, args=(signal.SIGINT,))
            timer.daemon = True
            timer.start()
            return
        unraisable(hook)

    signal.signal(signal.SIGINT, on_sigint)
    sys.unraisablehook = deliver_again
    try:
        yield
    except SystemExit as error:
        if not received:
            raise
        log.debug("SystemExit(%s) after Ctrl-C: reported as KeyboardInterrupt", error.code)
        raise KeyboardInterrupt("Ctrl-C") from None
    finally:
        sys.unraisablehook = unraisable
        signal.signal(signal.SIGINT, previous)
