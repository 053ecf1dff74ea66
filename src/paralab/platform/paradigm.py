"""The paradigm seam: the interface every paradigm implements, and its registry.

A paradigm is a class registered with ``@register_paradigm(name, config=...)``. It is built from
its validated config section; :meth:`Paradigm.check` runs before the run folder exists (so a bad
pairing leaves nothing on disk) and :meth:`Paradigm.run` trains and returns the final metrics.

The platform defines the seam and never imports a paradigm: the modules that register them are
found through the ``paralab.paradigms`` entry-point group (``pyproject.toml``), loaded the first
time the registry is asked for a name, so a package of one's own can add a paradigm the same way.
Paradigm modules import heavy libraries (Avalanche, Flower, Ray) inside methods, never at the
top, so that loading the registry stays cheap.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paralab.platform.registry import Registry

if TYPE_CHECKING:
    from paralab.platform.config import ResolvedConfig
    from paralab.platform.data import ClassificationData
    from paralab.platform.runner import RunContext


@dataclass
class ParadigmConfig:
    name: str = "supervised"


class Paradigm(ABC):
    """Receives the run context (config, data, model factory, tracker); returns final metrics.

    The returned dict holds at least ``test/<headline>`` of the run's task (``ctx.task``), the
    metric every comparison ranks by. A paradigm drives the task it is given: it never names a
    task's loss or metric itself.
    """

    #: how a user sets this paradigm's training budget in optimizer steps, when it does not
    #: read ``trainer.max_steps`` (Lightning's); None: it reads it
    step_budget: str | None = "no step budget: it trains by epochs"

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @property
    def strategy(self) -> str:
        """What distinguishes runs of this paradigm in a comparison (a continual or FL strategy)."""
        return "-"

    def check(self, config: ResolvedConfig, data: ClassificationData) -> None:  # noqa: B027
        """Raise :class:`~paralab.errors.ConfigError` for an impossible setting. Writes nothing."""

    @abstractmethod
    def run(self, ctx: RunContext) -> dict[str, float]: ...

    @classmethod
    @contextlib.contextmanager
    def warm(cls) -> Iterator[None]:
        """Held by a suite around its runs: a paradigm that starts an engine per run (the
        federated one starts Ray and its client workers) keeps it up for the next run inside.
        The default keeps nothing."""
        yield


PARADIGMS: Registry = Registry("paradigm", entry_points="paralab.paradigms")
register_paradigm = PARADIGMS.register


@contextlib.contextmanager
def warm_engines(*names: str) -> Iterator[None]:
    """Each named paradigm's :meth:`Paradigm.warm` (default: every paradigm's) around the runs
    inside."""
    with contextlib.ExitStack() as stack:
        for name in names or PARADIGMS.names():
            stack.enter_context(PARADIGMS.get(name).obj.warm())
        yield
