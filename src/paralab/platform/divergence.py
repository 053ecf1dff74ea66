"""Stop a run whose loss is no longer a number.

A NaN or infinite loss (``optim.lr=inf``, a learning rate far too high, an exploding model) does
not fix itself: every later step trains on NaN weights and the run ends at chance accuracy. Every
paradigm checks its loss once per epoch, experience or round through :func:`check_finite`; the
runner then keeps the folder with status ``failed`` and the CLI exits 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from paralab.errors import RunFailedError


class DivergedError(RunFailedError):
    """The training loss became NaN or infinite."""


def check_finite(values: Mapping[str, float] | float, where: str) -> None:
    """Raise :class:`DivergedError` if ``values`` (one loss, or a metrics dict whose ``loss``
    entries are checked) holds NaN or inf. ``where`` names the step: ``"epoch 3"``, ``"round 2"``.
    """
    items = values.items() if isinstance(values, Mapping) else [("loss", values)]
    bad = {k: v for k, v in items if "loss" in k and not math.isfinite(float(v))}
    if bad:
        shown = ", ".join(f"{k}={float(v)}" for k, v in bad.items())
        raise DivergedError(
            f"training diverged at {where}: {shown}. Lower optim.lr (and check optim.* and the "
            "data normalisation), then start a new run"
        )
