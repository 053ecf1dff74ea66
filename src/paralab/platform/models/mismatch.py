"""Why a checkpoint's backbone does not fit this run's model, in words that say the way out.

Split from :mod:`.transfer` (which finds and loads the tensors): a mismatch names both
backbones, from the source run's ``config.yaml`` and this run's config, and the overrides that
would make them alike (``model.channels=[8,16]``, ``model.backbone={name: cnn, ...}``), or says
that only the images differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

import torch
from torch import nn

from paralab.errors import ConfigError

KEY = "model.init_from"
_RANDOM = f"or {KEY}=null to start from random weights"
_SAME = (
    "Set this run's backbone to the settings the checkpoint was trained with (model=<name> and "
    f"its options; for a dense model, model.backbone={{name: ..., ...}}), {_RANDOM}"
)


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
