"""Probing a backbone at the end of a run, in a finished run folder, or freshly initialised.

Why the end of a run reads the run's checkpoint instead of the model object a paradigm trained:
the three paradigms hold their final model in different places (a LightningModule, an Avalanche
strategy's possibly wrapped model, the Flower server's global weights) and some never hand it
over. Every one of them saves its final state to the run's ``checkpoints/`` folder, from which
:func:`paralab.platform.models.transfer.load_backbone` already reads the backbone for any
paradigm. So the runner probes after ``paradigm.run`` returns without the paradigm knowing,
and ``paralab probe <run folder>`` later repeats exactly the same computation (same model
rebuild, same weights, same numbers). The cost: a run that probes must save checkpoints
(``tracking.checkpoints=true``), which :func:`check_probe` asks before the run starts.

The feature probes read only the backbone (so ``paralab probe DIR data=<other>`` may rebuild
the model with another head); zero-shot (``probe.zero_shot``) reads the whole model, whose text
tower and projections the prompts need. ``probe.data`` probes on another labelled dataset
(:mod:`paralab.platform.probes.transfer`), with the model as the run built it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paralab.errors import ConfigError, ParalabError, RunFailedError, RunFolderError
from paralab.platform.config import ResolvedConfig
from paralab.platform.data import ClassificationData
from paralab.platform.devices import one_device
from paralab.platform.probes.protocol import describe, probe
from paralab.platform.probes.transfer import labelled_datasets, load_probe_data
from paralab.platform.probes.zero_shot import has_text_tower

PROBE_FILE = "probe.json"


def check_probe(config: ResolvedConfig, data: ClassificationData, *, after_run: bool) -> None:
    """Refuse, before anything runs, a probe that could not be made."""
    cfg = config.probe
    if not (cfg.linear or cfg.knn or cfg.zero_shot):
        raise ConfigError(
            "probe.linear, probe.knn and probe.zero_shot are all false: nothing to measure. Set "
            "one of them true" + (", or probe.enabled=false" if after_run else "")
        )
    if cfg.zero_shot and not has_text_tower(build_probe_model(config, data)):
        raise ConfigError(
            f"probe.zero_shot=true: model={config.model.name} has no text tower to read "
            "class-name prompts with. Set probe.zero_shot=false, or train an image-text model "
            "(model=clip task=image_text)"
        )
    if cfg.data is not None:
        load_probe_data(config, data)  # a missing or unfit dataset fails before the run
    elif data.task != "classification":
        labelled = labelled_datasets()
        way_out = (
            "Probe on a dataset of labelled images: probe.data=<dataset>"
            if after_run
            else "Probe on a dataset of labelled images: probe.data=<dataset>, or data=<dataset>"
        )
        raise ConfigError(
            f"data={data.name} holds {data.task} masks, and the probes classify whole images by "
            f"their class. {way_out} ({', '.join(labelled)}; with the model's image channels)"
        )
    if after_run and not config.tracking.checkpoints:
        raise ConfigError(
            "probe.enabled=true with tracking.checkpoints=false: the probe reads the trained "
            "backbone from the run's last checkpoint. Set tracking.checkpoints=true, or "
            "probe.enabled=false"
        )
    if cfg.stage is not None:
        stages = len(build_probe_model(config, data).feature_info)
        if not -stages <= cfg.stage < stages:
            raise ConfigError(
                f"probe.stage={cfg.stage}: model={config.model.name} has {stages} stages. Set "
                f"probe.stage to 0..{stages - 1} (or -1 for the deepest), or null for the "
                "pooled output features"
            )


def probe_after_run(
    config: ResolvedConfig, data: ClassificationData, run_dir: Path
) -> dict[str, float]:
    """The ``probe/...`` metrics of the backbone a run just saved (its last checkpoint).

    Any input problem becomes a :class:`RunFailedError`: the run trained, so its folder is kept
    (and ``paralab probe`` can try again)."""
    from paralab.platform.progress import say

    try:
        metrics = _probe_checkpoint(config, data, _checkpoint(Path(run_dir)))
    except ParalabError as error:
        raise RunFailedError(
            f"the run trained, but probing its backbone failed: {error}. Probe its folder again "
            f"with: paralab probe {run_dir}"
        ) from None
    say(f"probe: {describe(metrics)}")
    return metrics


def probe_folder(run_dir: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Probe the backbone of an existing run folder on the run's data (or on the data the
    overrides name); write and return ``probe.json``: the metrics and what was probed."""
    from paralab.platform import tracking
    from paralab.platform.probes.overrides import saved_config

    path = Path(run_dir).expanduser()
    if not path.is_dir() or not (path / tracking.CONFIG).is_file():
        problem = "no such folder" if not path.exists() else f"no {tracking.CONFIG} there"
        raise RunFolderError(
            f"paralab probe {path}: {problem}. Give a run folder made by `paralab run` (it holds "
            f"{tracking.CONFIG} and checkpoints/), or probe an untrained model with "
            "paralab probe --random <experiment>"
        )
    file = _checkpoint(path)
    config = saved_config(path / tracking.CONFIG, overrides)
    data = _prepare(config)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    metrics = _probe_checkpoint(config, data, file, overrides)
    payload = {
        "run_dir": str(path), "checkpoint": str(file), "dataset": config.probe.data or data.name,
        "overrides": list(overrides), "probe": asdict(config.probe), "started": started,
        "metrics": metrics,
    }  # fmt: skip
    _write(path / PROBE_FILE, payload)
    return payload


def probe_random(experiment: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Probe a freshly initialised model of an experiment (the untrained baseline): its
    ``model.init_from`` is ignored and nothing is written."""
    from paralab.platform.config import load
    from paralab.platform.runner import seed_everything

    config = load(experiment, list(overrides))
    data = _prepare(config)
    seed_everything(config.seed)
    device = one_device(config.trainer)
    model = build_probe_model(config, data).to(device)
    metrics = _probe(model, config, data, device)
    return {
        "experiment": experiment, "overrides": list(overrides), "model": config.model.name,
        "dataset": config.probe.data or data.name, "probe": asdict(config.probe),
        "metrics": metrics,
    }  # fmt: skip


def build_probe_model(config: ResolvedConfig, data: ClassificationData) -> nn.Module:
    """The run's model for ``data``, freshly initialised (on the CPU) without reading its
    ``model.init_from`` (a probe replaces the backbone, or probes a random one)."""
    from paralab.platform.models import InputSpec
    from paralab.platform.runner import build_model

    if getattr(config.model, "init_from", None):
        model_cfg = replace(config.model, init_from=None)
        config = ResolvedConfig(replace(config.run, model=model_cfg), config.plain)
    spec = InputSpec(data.in_channels, data.image_size, data.num_classes)
    return build_model(config, spec)


def _probe_checkpoint(
    config: ResolvedConfig, data: ClassificationData, file: Path, overrides: Sequence[str] = ()
) -> dict[str, float]:
    """The probe of the model rebuilt from ``config`` with the backbone saved in ``file``."""
    from paralab.platform.models.transfer import load_backbone, load_model

    model = build_probe_model(config, data)
    try:
        if config.probe.zero_shot:  # the prompts need the text tower and projections too
            load_model(model, file)
        else:
            load_backbone(model, file, run_config=config.plain)
    except ConfigError as error:
        changed = f" with {' '.join(overrides)}" if overrides else ""
        raise ConfigError(
            f"{file} does not load into the model rebuilt from the run's config{changed}: "
            f"{_mismatch(error, file)}"
        ) from None
    device = one_device(config.trainer)
    return _probe(model.to(device), config, data, device)


def _probe(
    model: nn.Module, config: ResolvedConfig, data: ClassificationData, device: torch.device
) -> dict[str, float]:
    """:func:`probe` of ``model`` (built for ``data``, the run's) on the probe's data, with
    the run's zero-shot prompts."""
    templates = getattr(config.task, "templates", None) or ()
    probe_data = load_probe_data(config, data)
    return probe(model, probe_data, config.probe, device, config.seed, templates)


def _mismatch(error: ConfigError, file: Path) -> str:
    """What ``load_backbone`` said, without what concerns ``model.init_from`` (its key at the
    start, starting from random weights at the end): a probe reads the run's own weights."""
    from paralab.platform.models.transfer import KEY

    text = str(error).removeprefix(f"{KEY}={str(file)!r}: ")
    return re.sub(rf",? or {re.escape(KEY)}=null to start from random weights\.?$", "", text)


def _checkpoint(run_dir: Path) -> Path:
    """The run's last checkpoint (the file ``load_backbone`` reads for a run folder)."""
    from paralab.platform.models.transfer import RUN_FILES, checkpoint_file

    try:
        return checkpoint_file(run_dir)
    except ConfigError:
        raise RunFolderError(
            f"paralab probe {run_dir}: no checkpoint there (looked for checkpoints/"
            f"{{{','.join(RUN_FILES)}}}): the run saved none (tracking.checkpoints=false) or "
            "stopped before its first. Probe a run that saved checkpoints, or an untrained model "
            "with: paralab probe --random <experiment>"
        ) from None


def _prepare(config: ResolvedConfig) -> ClassificationData:
    """What ``runner.prepare`` does that a probe needs: quiet libraries, threads, the data."""
    from paralab.platform.quiet import quiet
    from paralab.platform.runner import load_data

    quiet()
    if config.trainer.num_threads:
        torch.set_num_threads(config.trainer.num_threads)
    data = load_data(config)
    check_probe(config, data, after_run=False)
    return data


def _write(path: Path, payload: dict[str, Any]) -> None:
    from paralab.platform.tracking import write_json

    try:
        write_json(path, payload)
    except OSError as error:
        raise RunFolderError(
            f"cannot write {path} ({error.strerror}). Probe a run folder you can write to"
        ) from None
