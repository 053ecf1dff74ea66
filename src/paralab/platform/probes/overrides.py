"""A run folder's saved config with ``key=value`` overrides: what ``paralab probe DIR k=v`` reads.

Why not compose with Hydra as ``paralab run`` does: a run folder holds the resolved config, not
the experiment it came from (which may have changed or be gone). So overrides apply to the
saved values: ``a.b=value`` sets one value (parsed as Hydra parses it: ``10``, ``0.1``,
``true``, ``null``, ``[1,2]``, quoted strings), and ``group=name`` for a config group (``data``,
``model``, ``task``, ``paradigm``, ``trainer``) replaces that whole section with the group's
config, composed from the config layers as ``paralab run`` composes it (``data=fashion_mnist``
probes on another dataset). The result is validated as strictly as any run config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from paralab.errors import ConfigError
from paralab.platform.config import (
    ResolvedConfig,
    config_dirs,
    did_you_mean,
    explain_parse_error,
    group_options,
    load_saved,
    validate,
)

GROUPS = ("model", "data", "task", "paradigm", "trainer")


def saved_config(path: Path, overrides: Sequence[str] = ()) -> ResolvedConfig:
    """The validated ``config.yaml`` at ``path`` with ``overrides`` applied."""
    saved = load_saved(path)  # a damaged file is a RunFolderError naming it
    if not overrides:
        return saved
    config = OmegaConf.create(saved.plain)
    for text in overrides:
        key, value = _parse(text)
        if key in GROUPS and isinstance(value, str):
            config[key] = group_section(key, value)
        else:
            OmegaConf.update(config, key, value, merge=True, force_add=True)
    return validate(config)


def _parse(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value as Hydra reads it); refuses what does not set one value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (e.g. probe.knn_k=10)")
    try:
        override = OverridesParser.create().parse_override(text)
    except HydraException:
        raise ConfigError(
            explain_parse_error([text]) or f"override {text!r} cannot be parsed"
        ) from None
    key = override.key_or_group
    if override.is_delete() or override.is_sweep_override() or override.package is not None:
        raise ConfigError(
            f"override {text!r}: a saved run config takes plain key=value overrides (no ~, @ "
            "or sweeps). Write e.g. probe.knn_k=10 or data=fashion_mnist"
        )
    if key == "experiment" or key == "hydra" or key.startswith("hydra."):
        raise ConfigError(
            f"override {text!r}: a run folder's config is already composed; override its keys "
            "instead (e.g. data=fashion_mnist, probe.train_limit=1000)"
        )
    return key, override.value()


def group_section(group: str, name: str) -> dict[str, Any]:
    """The ``group`` section that ``group=name`` gives a freshly composed config."""
    from hydra import compose as hydra_compose

    from paralab.platform.hydra_compat import initialize_layers

    options = group_options(group)
    if name not in options:
        choices = ", ".join(options)
        raise ConfigError(
            f"unknown {group} {name!r}{did_you_mean(name, options)}. Choose one of: {choices}"
        )
    with initialize_layers(config_dirs()):
        composed: DictConfig = hydra_compose("config", [f"{group}={name}"])
    return OmegaConf.to_container(composed[group], resolve=True)  # type: ignore[return-value]
