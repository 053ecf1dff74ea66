"""One checkpoint after every experience: the strategy's state, the RNGs and the results so far.

Avalanche strategies keep their memory in many shapes (replay buffers, EWC importances, the
previous model of LwF, GEM's gradients, iCaRL's exemplars, DER's logits), so the checkpoint is
the strategy's own attributes serialised with ``dill`` -- what Avalanche's ``save_checkpoint``
does -- minus the data loaders and the current experience, which are rebuilt. Loading it needs
``weights_only=False``: it is read only from the run's own folder, never from elsewhere.
The optimizer (whose patched ``step`` does not pickle) travels as its ``state_dict`` plus the
names of its parameters, and is rebuilt over the restored model.
"""

from __future__ import annotations

import contextlib
import copy
import io
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FILE = "continual.pt"
TRANSIENT = {
    "optimizer",
    "experience",
    "adapted_dataset",
    "dataloader",
    "_plain_adapted",
    "mbatch",
    "mb_output",
    "loss",
    "_eval_streams",
    "current_eval_stream",
}
#: Iterators do not pickle; a plugin holding one gets it rebuilt from what it iterates over.
REBUILD_ITERATOR = {"buffer_dliter": lambda p: iter(p.buffer_dataloader or [])}  # A-GEM
DROPPED = "_paralab_dropped_iterators"


@dataclass
class Progress:
    """What a resumed run needs besides the strategy: the results of the finished experiences."""

    matrix: list[list[float]] = field(default_factory=list)
    train_times: list[float] = field(default_factory=list)

    @property
    def next_experience(self) -> int:
        return len(self.matrix)


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(folder: Path, strategy: Any, progress: Progress) -> None:
    """Write atomically: an interrupted save leaves the previous checkpoint intact."""
    import dill

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in strategy.__dict__.items() if k not in TRANSIENT}
    state["plugins"] = [_without_iterators(p) for p in state.get("plugins", [])]
    names = {id(p): n for n, p in strategy.model.named_parameters()}
    optimizer = strategy.optimizer
    order = [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]
    payload = {
        "strategy": state,
        "progress": progress,
        "rng": rng_state(),
        "optimizer": {"state": optimizer.state_dict(), "params": order},
    }
    tmp = folder / (FILE + ".tmp")
    torch.save(payload, tmp, pickle_module=dill)
    tmp.replace(folder / FILE)


def load(
    folder: Path,
    strategy: Any,
    device: torch.device,
    make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
) -> Progress:
    """Restore the strategy in place and the RNGs; a missing file means a fresh start."""
    import dill

    path = folder / FILE
    if not path.is_file():
        return Progress()
    with contextlib.redirect_stdout(io.StringIO()):  # Avalanche prints every torch.device
        payload = torch.load(path, pickle_module=dill, map_location=device, weights_only=False)
    strategy.__dict__.update(payload["strategy"])
    strategy.device = device
    for plugin in strategy.plugins:
        for name in plugin.__dict__.pop(DROPPED, []):
            rebuild = REBUILD_ITERATOR.get(name)
            setattr(plugin, name, rebuild(plugin) if rebuild else None)
    params = dict(strategy.model.named_parameters())
    groups = payload["optimizer"]["params"]
    optimizer = make_optimizer([params[n] for n in groups[0]])
    for names in groups[1:]:
        optimizer.add_param_group({"params": [params[n] for n in names]})
    optimizer.load_state_dict(payload["optimizer"]["state"])
    strategy.optimizer = optimizer
    set_rng_state(payload["rng"])
    return payload["progress"]


def _without_iterators(plugin: Any) -> Any:
    names = [k for k, v in vars(plugin).items() if isinstance(v, Iterator)]
    if not names:
        return plugin
    clone = copy.copy(plugin)
    for name in names:
        delattr(clone, name)
    setattr(clone, DROPPED, names)
    return clone
