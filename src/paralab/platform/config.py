"""Compose a run config with Hydra, then validate it strictly against typed schemas.

Composition: ``configs/config.yaml`` plus the groups model/ data/ task/ paradigm/ trainer/, an
experiment from ``configs/experiment/`` and the user's ``key=value`` overrides. ``configs/`` is a
stack of layers (:func:`config_dirs`): the user's folders from ``$PARALAB_CONFIG_DIR`` over the
configs shipped inside the package, so a user adds one experiment without copying every group.
Validation: the top level against :class:`RunConfig`; each component section against the config
dataclass that its registered component declares. A typo, a wrong type or an unknown name raises
:class:`ConfigError` naming the key and the valid choices.
"""

from __future__ import annotations

import difflib
import os
import re
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

from paralab.errors import ConfigError, RunFolderError, UnknownComponentError
from paralab.platform.bounds import check_bounds
from paralab.platform.registry import Registry
from paralab.platform.schema import RunConfig

CONFIG_DIR_ENV = "PARALAB_CONFIG_DIR"


def config_dir() -> Path:
    """The ``configs/`` folder shipped inside the package (package data): the bottom layer."""
    return Path(__file__).resolve().parents[1] / "configs"


def config_dirs() -> list[Path]:
    """The config layers, first wins: each folder named in ``$PARALAB_CONFIG_DIR`` (several are
    separated by ``os.pathsep``), then the packaged configs.

    A user folder holds only what it adds or replaces (``experiment/mine.yaml``); a file with a
    packaged file's name replaces it, so a full copy of the configs still works as before.
    """
    value = os.environ.get(CONFIG_DIR_ENV, "")
    user = [Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p.strip()]
    for folder in user:
        if not folder.is_dir():
            raise ConfigError(
                f"{CONFIG_DIR_ENV}={value}: {folder} is not a folder. Point it at a folder of "
                "config groups (e.g. one holding experiment/mine.yaml), or unset it"
            )
    return list(dict.fromkeys([*user, config_dir()]))


def config_file(group: str, name: str) -> Path | None:
    """``<group>/<name>.yaml`` from the first layer that has it (what Hydra composes)."""
    for folder in config_dirs():
        path = folder / group / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def group_options(group: str) -> list[str]:
    """The names a config group offers: the yaml files in ``<layer>/<group>/`` of every layer."""
    names = {p.stem for folder in config_dirs() for p in (folder / group).glob("*.yaml")}
    return sorted(names)


def _group_folders(group: str) -> str:
    """Where a group's files are looked for, for error messages."""
    return ", ".join(str(folder / group) for folder in config_dirs())


def compose(experiment: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Hydra composition of ``experiment`` plus overrides, as a plain resolved DictConfig."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException

    from paralab.platform.hydra_compat import initialize_layers

    experiments = group_options("experiment")
    if experiment not in experiments:
        raise ConfigError(
            f"unknown experiment {experiment!r}{did_you_mean(experiment, experiments)}. "
            f"Choose one of: {', '.join(experiments)} (files in {_group_folders('experiment')})"
        )
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not key=value (e.g. trainer.max_epochs=3)")
        _refuse_hydra_key(override)
    overrides = list(overrides)
    layers = config_dirs()
    while True:
        try:
            with initialize_layers(layers):
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


def _refuse_hydra_key(override: str) -> None:
    """``hydra.*`` overrides compose without effect: paralab runs no Hydra app. Refuse them."""
    key = override.split("=", 1)[0].lstrip("+~")
    if key == "hydra" or key.startswith(("hydra.", "hydra/")):
        raise ConfigError(
            f"{override!r}: paralab does not use Hydra's own settings (hydra.*); a run's folder "
            "is output_dir/<name>-<time>. Set output_dir=... and name=... instead"
        )


def explain_parse_error(overrides: list[str]) -> str | None:
    """Which override Hydra's grammar refuses, and how to write it so that it parses."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException as error:
            key, _, value = override.partition("=")
            if not re.fullmatch(r"[+~]{0,2}[A-Za-z0-9_./@-]+", key):
                return (
                    f"override {override!r}: {key!r} is not a config key; keys are ASCII "
                    "letters, digits and _ . / @, written bare (e.g. trainer.max_epochs=3). "
                    "See them with: paralab run <experiment> --print-config"
                )
            reason = str(error).strip().splitlines()[0]
            how = (
                "Hydra reads non-ASCII characters only inside quotes"
                if not value.isascii()
                else f"Hydra could not parse it ({reason}); quote a value with special characters"
            )
            return (
                f"override {override!r}: {how}. Write it as '{key}=\"{value}\"' "
                "(with the outer single quotes in a shell)"
            )
    return None


def _explain_hydra_error(message: str, overrides: list[str]) -> str:
    if "override_grammar" in message or "LexerNoViableAlt" in message:
        explained = explain_parse_error(overrides)
        if explained:
            return explained
    for override in overrides:
        key, _, value = override.partition("=")
        if f"Could not find '{key}/{value}'" in message:
            options = group_options(key)
            return (
                f"unknown {key} {value!r}{did_you_mean(value, options)}. "
                f"Choose one of: {', '.join(options)}"
            )
    return message.strip().splitlines()[0]


def did_you_mean(word: str, choices: Sequence[str]) -> str:
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
            f"unknown config key '{_join(section, full_key)}'{did_you_mean(key, valid)}. "
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
    check_bounds(section, obj)
    return obj


def _schema_at(schema: type, path: str) -> type:
    """The dataclass that types ``path`` (dot-separated) inside ``schema`` (an optional
    section, ``Section | None = None``, by its annotation)."""
    import typing

    for part in filter(None, path.split(".")):
        field_ = {f.name: f for f in fields(schema)}[part]
        default = field_.default_factory() if field_.default_factory is not MISSING else None
        if is_dataclass(default):
            schema = type(default)
            continue
        try:
            hint = typing.get_type_hints(schema).get(part)
        except (NameError, TypeError):  # an annotation that does not resolve: stop here
            break
        inner = [t for t in typing.get_args(hint) if isinstance(t, type) and is_dataclass(t)]
        if not inner:
            break
        schema = inner[0]
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
    from paralab.platform.paradigm import PARADIGMS
    from paralab.platform.tasks import TASKS

    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    plain = dict(plain)
    sections = {"model": None, "data": None, "task": None, "paradigm": None}
    run: RunConfig = validate_section("", {**plain, **sections}, RunConfig)
    run.model = validate_component("model", plain.get("model"), MODELS)
    run.data = validate_component("data", plain.get("data"), DATASETS)
    run.task = validate_component("task", plain.get("task") or {"name": "classification"}, TASKS)
    run.paradigm = validate_component("paradigm", plain.get("paradigm"), PARADIGMS)
    return ResolvedConfig(run, plain)


def load(experiment: str, overrides: Sequence[str] = ()) -> ResolvedConfig:
    return validate(compose(experiment, overrides))


def load_saved(path: Path) -> ResolvedConfig:
    """Validate the ``config.yaml`` that a run folder holds."""
    import yaml

    way_out = (
        "Restore that file, or start the run afresh with `paralab run <experiment>` "
        "(the same settings as key=value overrides)"
    )
    try:
        saved = OmegaConf.load(path)
    except (yaml.YAMLError, UnicodeDecodeError, OmegaConfBaseException) as error:
        reason = str(error).strip().splitlines()[0]
        raise RunFolderError(f"{path} is not valid YAML ({reason}). {way_out}") from None
    if not isinstance(saved, DictConfig) or not saved:
        raise RunFolderError(f"{path} holds no run config (a mapping of keys). {way_out}")
    return validate(saved)
