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
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from paralab.errors import ConfigError

log = logging.getLogger(__name__)

KEY = "model.init_from"
#: In a run folder (or its ``checkpoints`` folder), the files tried in turn.
RUN_FILES = ("last.ckpt", "last.pt", "continual.pt")
_RANDOM = f"or {KEY}=null to start from random weights"
_SAME = (
    "Set this run's backbone to the settings the checkpoint was trained with (model=<name> and "
    f"its options; for a dense model, model.backbone={{name: ..., ...}}), {_RANDOM}"
)
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


def check_fits(
    backbone: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    value: str,
    source: Mapping[str, Any] | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> None:
    """Every tensor of ``backbone``, present in ``tensors`` with its shape; else a
    :class:`ConfigError` for ``model.init_from=<value>`` saying which, naming the source's
    model and this run's (from their plain configs, when known) and the fix."""
    own = backbone.state_dict()
    missing, extra = sorted(own.keys() - tensors.keys()), sorted(tensors.keys() - own.keys())
    problem = None
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} of the model's ({_few(missing)})")
        if extra:
            parts.append(f"has {len(extra)} the model lacks ({_few(extra)})")
        problem = f"its backbone does not match the model's: it {' and '.join(parts)}"
    else:
        for name, mine in own.items():
            theirs = tensors[name]
            if theirs.shape != mine.shape:
                problem = (
                    f"backbone tensor {name!r} is {list(theirs.shape)} in the checkpoint but "
                    f"{list(mine.shape)} in the model"
                )
                break
    if problem:
        raise ConfigError(f"{KEY}={value}: {problem}. {mismatch(source, run_config)}")


def mismatch(source: Mapping[str, Any] | None, run_config: Mapping[str, Any] | None) -> str:
    """Both backbones in words and the way out: the settings that differ, or the data."""
    if not source or not isinstance(source.get("model"), Mapping):
        return f"The checkpoint's model is unknown (no config.yaml in its run folder). {_SAME}"
    theirs = backbone_settings(source["model"])
    if not run_config or not isinstance(run_config.get("model"), Mapping):
        return f"The checkpoint's backbone is {describe(theirs, source)}. {_SAME}"
    mine = backbone_settings(run_config["model"])
    text = (
        f"The checkpoint's backbone is {describe(theirs, source, mine)}; this run's is "
        f"{describe(mine, run_config, theirs)}"
    )
    changes = _changes(theirs, mine)
    if not changes:
        return (
            f"{text}: set alike, so the images differ (input channels, or a vit's image size). "
            f"Start from a backbone trained on images like this run's, {_RANDOM}"
        )
    return f"{text}. Set {_overrides(changes, run_config['model'])}, {_RANDOM}"


def backbone_settings(model: Mapping[str, Any]) -> dict[str, Any]:
    """The options that make a model's backbone, defaults filled in: a dense model's
    ``backbone`` mapping, or a classifier's own options (``init_from`` left out)."""
    inner = model.get("backbone")
    values = dict(inner) if isinstance(inner, Mapping) else dict(model)
    values.pop("init_from", None)
    return {**_defaults(values.get("name")), **values}


def describe(
    settings: Mapping[str, Any],
    config: Mapping[str, Any],
    other: Mapping[str, Any] | None = None,
) -> str:
    """``cnn (channels=[16,32]) in unet, on canvas_digits``: the name, the options (only those
    that differ from ``other``'s when both name the same model) and where it sits."""
    from paralab.platform.bounds import show

    same = other is not None and other.get("name") == settings.get("name")
    options = [
        f"{k}={show(v)}"
        for k, v in settings.items()
        if k != "name" and (not same or other.get(k) != v)  # type: ignore[union-attr]
    ]
    text = str(settings.get("name")) + (f" ({', '.join(options)})" if options else "")
    model, data = config.get("model") or {}, config.get("data") or {}
    if isinstance(model.get("backbone"), Mapping):
        text += f" in {model.get('name')}"
    return text + (f", on {data.get('name')}" if data.get("name") else "")


def _changes(theirs: Mapping[str, Any], mine: Mapping[str, Any]) -> dict[str, Any]:
    """The source's settings this run's backbone must take: all but defaults for another
    model, the differing ones for the same model (``name`` first when it changes)."""
    if theirs.get("name") != mine.get("name"):
        defaults = _defaults(theirs.get("name"))
        kept = {k: v for k, v in theirs.items() if k != "name" and defaults.get(k, v) != v}
        return {"name": theirs.get("name"), **kept}
    return {k: v for k, v in theirs.items() if mine.get(k) != v}


def _overrides(changes: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    """The overrides that give this run's model the source's backbone."""
    from paralab.platform.bounds import show

    if isinstance(model.get("backbone"), Mapping):  # a dense model: its backbone mapping
        merged = {"name": model["backbone"].get("name"), **changes}
        inner = ", ".join(f"{k}: {show(v)}" for k, v in merged.items())
        return f"model.backbone={{{inner}}}"
    parts = [f"model={changes['name']}"] if "name" in changes else []
    parts += [f"model.{k}={show(v)}" for k, v in changes.items() if k != "name"]
    return " ".join(parts)


def _defaults(name: Any) -> dict[str, Any]:
    """The registered model's default options (empty for an unknown name)."""
    from paralab.platform.models.registry import MODELS

    if not isinstance(name, str) or name not in MODELS:
        return {}
    config = MODELS.get(name).config
    try:
        values = asdict(config()) if config is not None and is_dataclass(config) else {}
    except TypeError:  # a config with required options has no defaults to show
        return {}
    values.pop("init_from", None)
    return values


def _few(names: list[str], limit: int = 3) -> str:
    more = f", and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more
