"""Moving a trained backbone into a model built for another task or paradigm.

Why: every paralab model keeps its feature extractor under ``backbone`` (a :class:`Classifier`,
a dense model, an Avalanche multi-head model), so the backbone trained in one run (a classifier
trained continually or by federated clients) can start another (a U-Net). The checkpoints differ
only in where the model's state dict sits:

- Lightning (``*.ckpt``, supervised runs): ``{"state_dict": {"model.backbone.…": …}}``;
- federated (``last.pt``): ``{"model": {"backbone.…": …}, "strategy": …, "loop": …}``;
- continual (``continual.pt``): the strategy's model as ``{"strategy": {"model": {"tensors":
  {"backbone.…": …}}}}`` (see ``strategies/continual/state``);
- a plain state dict (``torch.save(model.state_dict())``).

A run folder picks ``checkpoints/last.ckpt``, ``last.pt`` or ``continual.pt``. Files are read
with ``torch.load(weights_only=True)``: a checkpoint may come from anyone. Loading is strict:
every backbone tensor must be present with its shape, else nothing is loaded and the
:class:`ConfigError` names ``model.backbone_weights``, the file and the way out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paralab.errors import ConfigError

KEY = "model.backbone_weights"
#: In a run folder (or its ``checkpoints`` folder), the files tried in turn.
RUN_FILES = ("last.ckpt", "last.pt", "continual.pt")
_SAME = (
    "set model.backbone to the settings the checkpoint was trained with (name and options), "
    "or model.backbone_weights=null to start from random weights"
)


def load_backbone(model: nn.Module, path: str | Path) -> int:
    """Load the backbone tensors of the checkpoint or run folder ``path`` into
    ``model.backbone``; return how many tensors (parameters and buffers) were loaded."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"{type(model).__name__} has no .backbone module to load weights into")
    file = checkpoint_file(path)
    tensors = backbone_tensors(_read(file), file)
    _check_fits(backbone, tensors, file)
    backbone.load_state_dict(tensors, strict=True)
    return len(tensors)


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself if a file, else the first of :data:`RUN_FILES` in its ``checkpoints``
    folder (a run folder) or in it (a checkpoints folder)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise ConfigError(
            f"{KEY}={str(path)!r}: no such file or folder. Give a checkpoint (*.ckpt, last.pt, "
            f"continual.pt) or a run folder holding checkpoints/last.ckpt or checkpoints/last.pt"
            f", or set {KEY}=null"
        )
    for folder in (path / "checkpoints", path):
        for name in RUN_FILES:
            if (folder / name).is_file():
                return folder / name
    raise ConfigError(
        f"{KEY}={str(path)!r}: the folder holds no checkpoint (looked for "
        f"checkpoints/{{{','.join(RUN_FILES)}}}). Give a run that saved checkpoints "
        f"(tracking.checkpoints=true) or the path of a checkpoint file"
    )


def backbone_tensors(payload: Any, file: Path | str = "") -> dict[str, torch.Tensor]:
    """The backbone's tensors in a loaded checkpoint, keyed as in ``Backbone.state_dict()``.

    Keys are taken from the part after the first ``backbone`` component
    (``model.backbone.stages.0.0.weight`` -> ``stages.0.0.weight``); when several prefixes hold
    a backbone (a model and a copy of it), the shortest prefix wins.
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in _state_dict(payload).items():
        parts = str(key).split(".")
        if "backbone" not in parts[:-1] or not isinstance(value, torch.Tensor):
            continue
        at = parts.index("backbone")
        groups.setdefault(".".join(parts[:at]), {})[".".join(parts[at + 1 :])] = value
    if not groups:
        raise ConfigError(
            f"{KEY}={str(file)!r}: no backbone tensors found (no key holds a 'backbone.' part). "
            f"Give a paralab checkpoint (Lightning *.ckpt, federated last.pt, continual.pt) or a "
            f"state dict saved from a paralab model, or set {KEY}=null"
        )
    return groups[min(groups, key=lambda prefix: (len(prefix), prefix))]


def _state_dict(payload: Any) -> Mapping[str, Any]:
    """Where the model's state dict sits in each kind of checkpoint (see the module doc)."""
    if not isinstance(payload, Mapping):
        return {}
    for candidate in (
        payload.get("state_dict"),  # Lightning
        payload.get("model"),  # federated
        _get(payload, "strategy", "model", "tensors"),  # continual
    ):
        if isinstance(candidate, Mapping):
            return candidate
    return payload  # a plain state dict


def _get(payload: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(payload, Mapping):
            return None
        payload = payload.get(key)
    return payload


def _read(file: Path) -> Any:
    from paralab.platform.checkpoints import unreadable

    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or refused objects
        raise ConfigError(
            f"{KEY}={str(file)!r} cannot be loaded: {unreadable(error)}. Give another "
            f"checkpoint, or set {KEY}=null"
        ) from None


def _check_fits(backbone: nn.Module, tensors: Mapping[str, torch.Tensor], file: Path) -> None:
    """Every tensor of the backbone, present with its shape; else a ConfigError saying which."""
    own = backbone.state_dict()
    missing, extra = sorted(own.keys() - tensors.keys()), sorted(tensors.keys() - own.keys())
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} of the model's ({_few(missing)})")
        if extra:
            parts.append(f"has {len(extra)} the model lacks ({_few(extra)})")
        raise ConfigError(
            f"{KEY}={str(file)!r}: its backbone does not match the model's: it "
            f"{' and '.join(parts)}. The backbone was trained with another model or depth; {_SAME}"
        )
    for name, mine in own.items():
        theirs = tensors[name]
        if theirs.shape != mine.shape:
            raise ConfigError(
                f"{KEY}={str(file)!r}: backbone tensor {name!r} is {list(theirs.shape)} in the "
                f"checkpoint but {list(mine.shape)} in the model: the backbone was trained with "
                f"other settings (channels, widths, input channels or image size); {_SAME}"
            )


def _few(names: list[str], limit: int = 3) -> str:
    more = f", and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more
