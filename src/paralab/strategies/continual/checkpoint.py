"""One checkpoint after every experience: the strategy's state, the RNGs and the results so far;
and one after every epoch inside an experience (``continual-within.pt``), so that a long
experience (the papers' budgets, CIFAR epochs) resumes where it stopped, not at its start.

The file holds tensors and plain types only and is read with ``torch.load(weights_only=True)``:
a run folder can come from anywhere (a colleague, a download), and a pickled object in it would
run code on ``--resume``. :mod:`.state` turns the strategy's memory (replay buffers, importances,
model copies) into data and back; the optimizer travels as its ``state_dict`` plus the names of
its parameters and is rebuilt over the restored model; the RNG states as tensors and lists.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paralab.errors import RunFolderError
from paralab.platform.checkpoints import CHECKPOINT_REMEDY, unreadable

FILE = "continual.pt"
WITHIN = "continual-within.pt"  # the experience in progress, after its last finished epoch
FORMAT = 2  # 1: the strategy pickled with dill (refused now: it could run code)
REMEDY = CHECKPOINT_REMEDY


@dataclass
class Progress:
    """What a resumed run needs besides the strategy: the results of the finished experiences."""

    matrix: list[list[float]] = field(default_factory=list)
    train_times: list[float] = field(default_factory=list)

    @property
    def next_experience(self) -> int:
        return len(self.matrix)


def rng_state() -> dict[str, Any]:
    """torch's, numpy's and Python's RNG states as tensors and plain types."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    saved = state["numpy"]
    keys = saved["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, saved["pos"], saved["has_gauss"], saved["cached"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save(folder: Path, strategy: Any, progress: Progress) -> None:
    """Write atomically: an interrupted save leaves the previous checkpoint intact. The file of
    the experience in progress is removed once its experience is saved whole."""
    _write(folder / FILE, {**_strategy_payload(strategy), "progress": asdict(progress)})
    (folder / WITHIN).unlink(missing_ok=True)


def save_within(folder: Path, strategy: Any, experience: int) -> None:
    """The strategy in the middle of ``experience`` (an index into the run's experiences; 0 for
    joint training), after an epoch; read back by :func:`load_within`."""
    epochs = strategy.clock.train_exp_epochs
    _write(folder / WITHIN, {**_strategy_payload(strategy), "experience": experience,
                             "epochs": epochs})  # fmt: skip


def _strategy_payload(strategy: Any) -> dict[str, Any]:
    from paralab.strategies.continual import state

    names = {id(p): n for n, p in strategy.model.named_parameters()}
    optimizer = strategy.optimizer
    order = [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]
    return {
        "format": FORMAT,
        "strategy": state.encode(strategy),
        "rng": rng_state(),
        "optimizer": {"state": optimizer.state_dict(), "params": order},
    }


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint's payload, loaded as data only; a file that is not one is a
    :class:`RunFolderError` naming it."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated, garbage, or holding objects weights_only refuses
        raise RunFolderError(
            f"continual checkpoint {path} cannot be loaded: {unreadable(error)}. {REMEDY}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RunFolderError(
            f"{path} is not a continual checkpoint of this paralab version (format "
            f"{payload.get('format', 1) if isinstance(payload, dict) else '?'}). {REMEDY}"
        )
    return payload


def load(
    folder: Path,
    strategy: Any,
    device: torch.device,
    make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
    train_datasets: Sequence[Any],
) -> Progress:
    """Restore the strategy in place and the RNGs; a missing file means a fresh start.

    ``train_datasets`` are the stream's training experiences, from which buffers are cut again.
    """
    path = folder / FILE
    if not path.is_file():
        return Progress()
    payload = read(path, device)
    restore(strategy, payload, make_optimizer, train_datasets, path)
    try:
        return Progress(**payload["progress"])
    except (KeyError, TypeError) as error:
        raise RunFolderError(f"continual checkpoint {path} has no usable progress ({error}). "
                             f"{REMEDY}") from None  # fmt: skip


def restore(
    strategy: Any,
    payload: dict[str, Any],
    make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
    train_datasets: Sequence[Any],
    path: Path,
) -> None:
    """Write a :func:`save` or :func:`save_within` payload read from ``path`` into ``strategy``
    (built fresh from the same config): its state, its optimizer and the RNGs."""
    from paralab.strategies.continual import state

    device = strategy.device
    try:
        state.restore(strategy, payload["strategy"], train_datasets)
        strategy.device = device
        strategy.optimizer = _optimizer(strategy, payload["optimizer"], make_optimizer)
        set_rng_state(payload["rng"])
    except (state.StateError, KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        within = (
            " Delete it to restart the experience from its start." if path.name == WITHIN else ""
        )
        raise RunFolderError(
            f"continual checkpoint {path} does not fit this run's strategy ({error}).{within} "
            f"{REMEDY}"
        ) from None


def load_within(
    folder: Path, experience: int, device: torch.device | str = "cpu"
) -> dict[str, Any] | None:
    """The saved middle of ``experience`` (the next one to train), if any: a file left from an
    earlier experience (a stop between the two saves) is ignored."""
    path = folder / WITHIN
    if not path.is_file():
        return None
    payload = read(path, device)
    return payload if payload.get("experience") == experience else None


def _optimizer(strategy: Any, saved: dict[str, Any], make_optimizer) -> torch.optim.Optimizer:
    """The optimizer rebuilt over the restored model, its groups in the saved order."""
    params = dict(strategy.model.named_parameters())
    groups = saved["params"]
    optimizer = make_optimizer([params[n] for n in groups[0]])
    for names in groups[1:]:
        optimizer.add_param_group({"params": [params[n] for n in names]})
    optimizer.load_state_dict(saved["state"])
    return optimizer
