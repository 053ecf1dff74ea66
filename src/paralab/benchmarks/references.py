"""``key=@<run>`` in a suite: the run folder of an earlier run of the same suite.

Why: a suite can train a backbone in one run and start others from it, e.g. a rotation pretext
run and fine-tuning runs at several label fractions (``model.init_from=@rotation``). That folder
exists only once the referenced run has run, so a reference is handled in two steps:

- when the suite is prepared (before its first run), every reference is checked: it names a run
  of the suite listed before the run that uses it, which this invocation runs too (or whose
  folder the suite folder already holds, on ``--resume``). The run is prepared with the key set
  to null; for ``model.init_from`` both runs' models are built and their backbones compared, so
  a mismatch stops the suite before its first run, not hours into it.
- just before the run starts, the key is set to the referenced run's folder in the suite folder,
  and the run is prepared again as every run is (the checkpoint itself is then read).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paralab.errors import ConfigError, RunFolderError

MARK = "@"


@dataclass(frozen=True)
class Reference:
    """``key=@run`` in one run's overrides."""

    key: str
    run: str

    @property
    def override(self) -> str:
        return f"{self.key}={MARK}{self.run}"


def references(overrides: Sequence[str]) -> list[Reference]:
    """The ``key=@run`` overrides among ``overrides`` (a ``+`` before the key is dropped) that
    stay in force: a later override of the same key (the user's, say) replaces a reference."""
    last: dict[str, Reference | None] = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+")
        if sep and value.startswith(MARK) and len(value) > 1:
            last[key] = Reference(key, value[len(MARK) :])
        elif sep:
            last[key] = None
    return [ref for ref in last.values() if ref is not None]


def deferred(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with each ``key=@run`` as ``key=null``: the run as prepared before the
    folder it names exists (a reference replaced by a later override is nulled too: the later
    one wins)."""

    def null(override: str) -> str:
        key, _, value = override.partition("=")
        return f"{key}=null" if value.startswith(MARK) and len(value) > 1 else override

    return [null(o) for o in overrides]


def check_references(
    suite: str,
    order: Sequence[str],
    selected: Mapping[str, Sequence[str]],
    done: Collection[str] = (),
) -> dict[str, list[Reference]]:
    """Each selected run's references, checked: the run named exists in the suite (``order``:
    its runs in turn), comes before the run that names it, and is selected too or has a folder
    already (``done``). ``selected`` maps each selected run to its overrides."""
    found: dict[str, list[Reference]] = {}
    for run, overrides in selected.items():
        for ref in references(overrides):
            _check_one(suite, order, run, ref, set(selected) | set(done))
            found.setdefault(run, []).append(ref)
    return found


def _check_one(suite: str, order: Sequence[str], run: str, ref: Reference, present) -> None:
    where = f"benchmark {suite}, run {run}: {ref.override}"
    if ref.run not in order:
        raise ConfigError(
            f"{where} names no run of the suite. {MARK}<run> is the folder of an earlier run; "
            f"this suite's runs: {', '.join(order)}"
        )
    if order.index(ref.run) >= order.index(run):
        raise ConfigError(
            f"{where} names {'the run itself' if ref.run == run else 'a later run'}: its folder "
            f"does not exist yet when {run} starts. List {ref.run} before {run} under runs: in "
            f"the suite file, or set {ref.key} to a finished run's folder"
        )
    if ref.run not in present:
        raise ConfigError(
            f"{where}: --only leaves out {ref.run}, whose folder {run} starts from. Add it "
            f"(--only {ref.run},{run}), or finish a suite folder that holds it with "
            f"paralab bench --resume <folder>"
        )


def resolve(config: Any, refs: Sequence[Reference], folder_of: Callable[[str], Path | None]):
    """``config`` (a ResolvedConfig) with each reference's key set to its run's folder,
    validated again; ``folder_of(run)`` finds the folder (None: the run has not run)."""
    from paralab.platform.config import validate

    if not refs:
        return config
    plain = copy.deepcopy(config.plain)
    for ref in refs:
        folder = folder_of(ref.run)
        if folder is None:
            raise RunFolderError(
                f"{ref.override}: the suite folder holds no folder of run {ref.run}. Run "
                f"{ref.run} first (it must come earlier in the suite)"
            )
        _set(plain, ref.key, str(Path(folder).resolve()))
    return validate(plain)


def _set(plain: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        plain = plain.setdefault(part, {})
    plain[last] = value


def check_init_fits(where: str, config: Any, data: Any, ref: Reference, source: tuple) -> None:
    """For ``model.init_from=@<ref>``: build the referenced run's model (``source``: its config
    and data) and this run's, and compare their backbones, before either run starts. The
    referenced run must save checkpoints, or there is nothing to start from. ``where`` names
    the suite and run in messages."""
    from paralab.platform.models.transfer import KEY, check_fits

    if ref.key != KEY:
        return
    source_config, source_data = source
    if not source_config.tracking.checkpoints:
        raise ConfigError(
            f"{where}: {ref.override}, but run {ref.run} saves no checkpoint "
            f"(tracking.checkpoints=false). Set tracking.checkpoints=true for {ref.run}"
        )
    theirs = _model(source_config, source_data).backbone.state_dict()
    mine = _model(config, data).backbone
    try:
        check_fits(mine, theirs, f"{MARK}{ref.run}", source_config.plain, config.plain)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def _model(config: Any, data: Any):
    from paralab.platform.models import InputSpec
    from paralab.platform.runner import build_model, build_task

    spec = InputSpec(data.in_channels, data.image_size, data.num_classes)
    return build_model(config, spec, task=build_task(config, data), initialize=False)
