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
:class:`ConfigError` names ``model.init_from``, the file, the checkpoint's model and this run's
(from the ``config.yaml`` of the run folder that holds the checkpoint) and the way out.

``model.init_from`` is loaded by :func:`init_from`, which the runner calls once a model is built:
when a run is prepared (the fit check, before its folder exists) and when it starts. The
backbone read last is kept, so both read the file once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.models.mismatch import KEY, check_fits

log = logging.getLogger(__name__)

#: In a run folder (or its ``checkpoints`` folder), the files tried in turn.
RUN_FILES = ("last.ckpt", "last.pt", "continual.pt")
#: The backbone read last: (file, modification time, size) -> its tensors.
_last: tuple[tuple[str, int, int], dict[str, torch.Tensor]] | None = None


def init_from(model: nn.Module, config: Any) -> int:
    """Load the backbone ``config.model.init_from`` names into ``model`` (built for the run
    ``config``, a :class:`~paralab.platform.config.ResolvedConfig`); 0 when it is unset."""
    source = getattr(config.model, "init_from", None)
    if not source:
        return 0
    return load_backbone(model, source, run_config=config.plain)


def resumed_from_checkpoint(config: Any, run_dir: Path) -> None:
    """A run resumed from a checkpoint of its own takes every weight from it: its
    ``model.init_from`` is not read again (the source may have moved since), though its
    config.yaml still records it."""
    folder = Path(run_dir) / "checkpoints"
    if getattr(config.model, "init_from", None) and any(
        (folder / name).is_file() for name in RUN_FILES
    ):
        config.model.init_from = None


def load_backbone(
    model: nn.Module, path: str | Path, *, run_config: Mapping[str, Any] | None = None
) -> int:
    """Load the backbone tensors of the checkpoint or run folder ``path`` into
    ``model.backbone``; return how many tensors (parameters and buffers) were loaded.

    ``run_config`` (the plain config of the run ``model`` is built for) lets a mismatch name
    this run's model next to the checkpoint's.
    """
    backbone = _backbone_module(model)
    file = checkpoint_file(path)
    tensors = _cached_backbone(file)
    check_fits(backbone, tensors, repr(str(file)), source_config(file), run_config)
    backbone.load_state_dict(tensors, strict=True)
    return len(tensors)


def _backbone_module(model: nn.Module) -> nn.Module:
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"{type(model).__name__} has no .backbone module to load weights into")
    return backbone


def _cached_backbone(file: Path) -> dict[str, torch.Tensor]:
    """The backbone tensors of ``file``, read once while the file is unchanged (a run's
    preparation and its start both load it). ``load_state_dict`` copies them, so the kept
    tensors are never written to."""
    global _last
    stat = file.stat()
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    if _last is None or _last[0] != key:
        tensors = backbone_tensors(_read(file), file)
        log.debug("read the backbone (%d tensors) of %s", len(tensors), file)
        _last = (key, tensors)
    return _last[1]


def source_config(path: str | Path) -> dict[str, Any] | None:
    """The config of the run that made the checkpoint ``path`` (``config.yaml`` in the run
    folder, its ``checkpoints`` folder's parent), or None for a file outside a run folder."""
    path = Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    for candidate in (folder, folder.parent):
        file = candidate / "config.yaml"
        if file.is_file():
            try:
                saved = yaml.safe_load(file.read_text())
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                return None
            return saved if isinstance(saved, dict) else None
    return None


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


def load_model(model: nn.Module, path: str | Path) -> int:
    """Load every tensor of the checkpoint or run folder ``path`` into ``model`` (built from
    the same config: a probe that needs more than the backbone, e.g. CLIP's text tower for
    zero-shot); return how many. Strict: a tensor missing, left over or of another shape is a
    :class:`ConfigError` naming the first few."""
    file = checkpoint_file(path)
    payload = _read(file)
    backbone = backbone_tensors(payload, file)  # refuses a file with no paralab model
    prefix = _backbone_prefix(payload)
    state = {
        key[len(prefix) :]: value
        for key, value in _state_dict(payload).items()
        if key.startswith(prefix) and isinstance(value, torch.Tensor)
    }
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    problems = [
        f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for what, keys in (("missing", missing), ("unexpected", extra), ("other shape", shapes))
        if keys
    ]
    if problems:
        raise ConfigError(
            f"{str(file)!r} does not hold this model ({len(backbone)} backbone tensors found; "
            f"{'; '.join(problems)}). Probe with the config the run was trained with"
        )
    model.load_state_dict(state, strict=True)
    return len(state)


def _backbone_prefix(payload: Any) -> str:
    """The shortest key prefix before a ``backbone.`` part (``model.`` in Lightning's)."""
    prefixes = {
        ".".join(parts[: parts.index("backbone")])
        for parts in (str(k).split(".") for k in _state_dict(payload))
        if "backbone" in parts[:-1]
    }
    shortest = min(prefixes, key=lambda p: (len(p), p))
    return f"{shortest}." if shortest else ""


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


__all__ = ["KEY", "RUN_FILES", "check_fits", "init_from", "load_backbone"]
