"""Compose a run config with Hydra, then validate it strictly against typed schemas.

Composition: ``configs/config.yaml`` plus the groups model/ data/ paradigm/ trainer/, an
experiment from ``configs/experiment/`` and the user's ``key=value`` overrides. Validation: the top
level against :class:`RunConfig`; each component section against the config dataclass that its
registered component declares. A typo, a wrong type or an unknown name raises
:class:`ConfigError` naming the key and the valid choices.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from paralab.errors import ConfigError, UnknownComponentError
from paralab.platform.registry import Registry
from paralab.platform.schema import WANDB_MODES, RunConfig

CONFIG_DIR_ENV = "PARALAB_CONFIG_DIR"


def config_dir() -> Path:
    """$PARALAB_CONFIG_DIR, else the ``configs/`` folder shipped inside the package."""
    if os.environ.get(CONFIG_DIR_ENV):
        return Path(os.environ[CONFIG_DIR_ENV]).resolve()
    return Path(__file__).resolve().parents[1] / "configs"


def group_options(group: str) -> list[str]:
    """The names a config group offers (the yaml files in ``configs/<group>/``)."""
    folder = config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def compose(experiment: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Hydra composition of ``experiment`` plus overrides, as a plain resolved DictConfig."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    experiments = group_options("experiment")
    if experiment not in experiments:
        raise ConfigError(
            f"unknown experiment {experiment!r}{_suggest(experiment, experiments)}. "
            f"Choose one of: {', '.join(experiments)} (files in {config_dir() / 'experiment'})"
        )
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not key=value (e.g. trainer.max_epochs=3)")
    overrides = list(overrides)
    while True:
        try:
            with initialize_config_dir(str(config_dir()), version_base="1.3"):
                cfg = hydra_compose("config", [f"experiment={experiment}", *overrides])
            break
        except (HydraException, OmegaConfBaseException) as error:
            appended = _append_unknown_key(str(error), overrides)
            if appended is None:
                raise ConfigError(_explain_hydra_error(str(error), overrides)) from None
            overrides = appended
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"config interpolation failed: {error}") from None
    return OmegaConf.create(resolved)


def _append_unknown_key(message: str, overrides: list[str]) -> list[str] | None:
    """Turn ``key=v`` for a key the config lacks into ``+key=v``: strict validation then
    reports it with the valid keys of its (possibly overridden) component."""
    if "Could not override" not in message:
        return None
    for i, override in enumerate(overrides):
        key = override.split("=", 1)[0]
        if f"Could not override '{key}'" in message and not key.startswith("+"):
            return [*overrides[:i], "+" + override, *overrides[i + 1 :]]
    return None


def _explain_hydra_error(message: str, overrides: list[str]) -> str:
    for override in overrides:
        key, _, value = override.partition("=")
        if f"Could not find '{key}/{value}'" in message:
            options = group_options(key)
            return (
                f"unknown {key} {value!r}{_suggest(value, options)}. "
                f"Choose one of: {', '.join(options)}"
            )
    return message.strip().splitlines()[0]


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_section(section: str, values: Any, schema: type) -> Any:
    """Merge ``values`` into ``schema`` strictly; return the dataclass instance."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values or {})
        obj = OmegaConf.to_object(merged)
    except ConfigKeyError as error:
        full_key = str(getattr(error, "full_key", "") or getattr(error, "key", ""))
        parent, _, key = full_key.rpartition(".")
        valid = [f.name for f in fields(_schema_at(schema, parent))]
        scope = _join(section, parent)
        where = f"under {scope!r}" if scope else "at the top level"
        raise ConfigError(
            f"unknown config key '{_join(section, full_key)}'{_suggest(key, valid)}. "
            f"Valid keys {where}: {', '.join(valid)}"
        ) from None
    except MissingMandatoryValue as error:
        key = _join(section, str(getattr(error, "full_key", "") or getattr(error, "key", "")))
        raise ConfigError(f"{key} is required: set {key}=...") from None
    except ValidationError as error:
        key = _join(section, str(getattr(error, "full_key", "") or getattr(error, "key", "")))
        raise ConfigError(f"{key}: {str(error).splitlines()[0]}") from None
    except OmegaConfBaseException as error:
        raise ConfigError(f"{section}: {str(error).splitlines()[0]}") from None
    return obj


def _schema_at(schema: type, path: str) -> type:
    """The dataclass that types ``path`` (dot-separated) inside ``schema``."""
    for part in filter(None, path.split(".")):
        field_ = {f.name: f for f in fields(schema)}[part]
        default = field_.default_factory() if field_.default_factory is not MISSING else None
        if not is_dataclass(default):
            break
        schema = type(default)
    return schema


def _join(section: str, key: str) -> str:
    return ".".join(part for part in (section, key) if part)


def validate_component(section: str, values: Any, registry: Registry) -> Any:
    """Look the section's ``name`` up in ``registry`` and validate against its config class."""
    name = (values or {}).get("name")
    if name is None:
        raise ConfigError(f"{section}.name is missing: choose one of {', '.join(registry.names())}")
    try:
        entry = registry.get(str(name))
    except UnknownComponentError as error:
        raise UnknownComponentError(f"{section}.name: {error}") from None
    return validate_section(section, values, entry.config) if entry.config else values


@dataclass
class ResolvedConfig:
    """A validated run config: typed sections plus the plain dict that was written to disk."""

    run: RunConfig
    plain: dict[str, Any]

    def __getattr__(self, item: str) -> Any:
        return getattr(self.run, item)


def validate(cfg: DictConfig | dict) -> ResolvedConfig:
    """Strict validation of a composed config against every schema and registry."""
    from paralab.platform.data import DATASETS
    from paralab.platform.models import MODELS
    from paralab.strategies import PARADIGMS

    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    plain = dict(plain)
    run: RunConfig = validate_section("", {**plain, "model": None, "data": None,
                                                 "paradigm": None}, RunConfig)  # fmt: skip
    run.model = validate_component("model", plain.get("model"), MODELS)
    run.data = validate_component("data", plain.get("data"), DATASETS)
    run.paradigm = validate_component("paradigm", plain.get("paradigm"), PARADIGMS)
    if run.tracking.wandb not in WANDB_MODES:
        raise ConfigError(
            f"tracking.wandb={run.tracking.wandb!r}: choose one of {', '.join(WANDB_MODES)}"
        )
    return ResolvedConfig(run, plain)


def load(experiment: str, overrides: Sequence[str] = ()) -> ResolvedConfig:
    return validate(compose(experiment, overrides))


def load_saved(path: Path) -> ResolvedConfig:
    """Validate the ``config.yaml`` that a run folder holds."""
    return validate(OmegaConf.load(path))
