"""Progress lines (one per epoch, experience or round; where a run folder is left) go through the
``paralab`` logger; the front end decides where they go.

Library code calls :func:`say`. ``paralab`` (the CLI) and ``paralab.run`` / ``paralab.bench``
(the Python API) call :func:`show_on_stderr`, which prints them bare on standard error unless
the application configured the ``paralab`` logger itself (a handler of its own, or a level
above INFO): then its settings win.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("paralab")


def say(message: str) -> None:
    """One progress line for the user."""
    log.info(message)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a redirected file)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_on_stderr() -> None:
    """Print the ``paralab`` logger's lines bare on stderr, once, unless configured already."""
    if log.handlers or log.level > logging.INFO:
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
