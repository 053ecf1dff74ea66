"""The typed top level of a run config. Component sections (model, data, paradigm) are typed by
the config dataclass their registered component declares; see :mod:`paralab.platform.config`.

Each field declares its valid range next to its default (:func:`~paralab.platform.bounds.bounded`);
the values Lightning accepts are listed here and kept in step with Lightning by a test.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paralab.platform.bounds import bounded, limits
from paralab.platform.probes.config import ProbeConfig

WANDB_MODES = ("offline", "online", "disabled")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "cosine", "step", "onecycle")
SEED_MAX = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything enforces

# What Lightning 2.x accepts as Trainer(accelerator=..., precision=..., strategy=...)
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps", "tpu")
PRECISIONS = (
    "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true",
    "transformer-engine", "transformer-engine-float16", "32", "16", "bf16", "64",
)  # fmt: skip
LIGHTNING_STRATEGIES = (
    "auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_false",
    "ddp_find_unused_parameters_true", "ddp_spawn_find_unused_parameters_false",
    "ddp_spawn_find_unused_parameters_true", "ddp_fork_find_unused_parameters_false",
    "ddp_fork_find_unused_parameters_true", "ddp_notebook_find_unused_parameters_false",
    "ddp_notebook_find_unused_parameters_true", "deepspeed", "deepspeed_stage_1",
    "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3",
    "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme", "fsdp", "fsdp_cpu_offload",
    "single_device", "single_xla", "xla_debug", "xla", "single_tpu",
)  # fmt: skip

NAME_MAX_BYTES = 200  # file systems allow 255 per folder name; the run folder adds -<time>[-n]
NAME_PATTERN = re.compile(r"\w[\w.+=@-]*")
NAME_RULE = "letters, digits and _ . - + = @, starting with a letter, digit or _"


def run_name_problem(name: str, key: str = "name") -> str | None:
    """Why ``name`` cannot be a run folder inside output_dir (None when it can)."""
    if len(name.encode()) > NAME_MAX_BYTES:
        return (
            f"too long for a folder name ({len(name.encode())} bytes). "
            f"Use at most {NAME_MAX_BYTES} bytes (an ASCII character is one byte)"
        )
    if not NAME_PATTERN.fullmatch(name):
        return (
            f"a run name becomes one folder inside output_dir, so it may hold only {NAME_RULE} "
            f"(no path separators, no '..', no spaces). Set e.g. {key}=my-run, and "
            "output_dir=... to choose where run folders go"
        )
    return None


def output_dir_problem(value: str, key: str = "output_dir") -> str | None:
    """Why run folders cannot be created under ``value`` (None when they can). Creates nothing."""
    path = Path(value).expanduser()
    way_out = f"Set {key}= a folder you can write (it is created if missing), e.g. {key}=runs"
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder. {way_out}"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{path} lies under the file {existing}. {way_out}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot create folders in {existing} (no permission, or read-only). {way_out}"
    return None


def _name_check(value: Any, key: str) -> str | None:
    return run_name_problem(str(value), key)


def _output_dir_check(value: Any, key: str) -> str | None:
    return output_dir_problem(str(value), key)


def _accelerator_check(value: Any, key: str) -> str | None:
    """The accelerator must exist on this machine (Lightning only finds out when it starts)."""
    if value in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            return f"no CUDA GPU is visible here. Set {key}=cpu (or auto: a GPU when there is one)"
    if value == "mps":
        import torch

        if not torch.backends.mps.is_available():
            return f"MPS is not available here. Set {key}=cpu (or auto)"
    if value == "tpu" and importlib.util.find_spec("torch_xla") is None:
        return f"TPUs need torch_xla, which is not installed. Set {key}=cpu (or auto)"
    return None


def _devices_check(value: Any, key: str) -> str | None:
    """A count >= 1, auto or -1 (every device), or device ids: [0,1] or "0,1"."""
    text = str(value).strip()
    if isinstance(value, list | tuple) or "," in text:
        ids = (
            [str(i).strip() for i in value] if isinstance(value, list | tuple) else text.split(",")
        )
        ids = [i for i in ids if i]
        ok = bool(ids) and all(i.isdigit() for i in ids)
    else:
        ok = text in ("auto", "-1") or (
            not isinstance(value, bool) and text.isdigit() and int(text) >= 1
        )
    if ok:
        return None
    return (
        "must be a number of devices >= 1, auto (or -1) for every device, or a list of device "
        f"ids such as [0,1]. Set e.g. {key}=1"
    )


def _limit_batches_check(value: Any, key: str) -> str | None:
    if isinstance(value, bool) or not (
        (isinstance(value, int) and value >= 1) or (isinstance(value, float) and 0 < value <= 1)
    ):
        return (
            "must be a number of batches >= 1, a fraction of them in (0, 1], or null for all. "
            f"Set e.g. {key}=null"
        )
    return None


@dataclass
class TrainerConfig:
    """Lightning Trainer options; continual and federated paradigms read epochs and device."""

    max_epochs: int = bounded(5, ge=1)
    max_steps: int | None = bounded(None, ge=1)  # optimizer steps instead of epochs (supervised)
    accelerator: str = bounded("auto", choices=ACCELERATORS, check=_accelerator_check,
                               hint=" (Lightning's accelerators)")  # fmt: skip
    devices: Any = field(default=1, metadata=limits(check=_devices_check))
    strategy: str = bounded("auto", choices=LIGHTNING_STRATEGIES)
    num_nodes: int = bounded(1, ge=1)
    precision: str = bounded("32-true", choices=PRECISIONS, hint=" (Lightning's precisions)")
    deterministic: Any = field(default=True, metadata=limits(choices=(True, False, "warn")))
    gradient_clip_val: float | None = bounded(None, ge=0)
    limit_train_batches: Any = field(default=None, metadata=limits(check=_limit_batches_check))
    check_val_every_n_epoch: int = bounded(1, ge=1)
    log_every_n_steps: int = bounded(50, ge=1)
    num_threads: int | None = bounded(None, ge=1)
    progress_bar: bool | None = None
    channels_last: bool = True


@dataclass
class OptimConfig:
    name: str = bounded("adamw", choices=OPTIMIZERS)
    lr: float = bounded(1e-3, gt=0)
    weight_decay: float = bounded(5e-4, ge=0)
    momentum: float = bounded(0.9, ge=0, lt=1)
    nesterov: bool = False
    scheduler: str = bounded("cosine", choices=SCHEDULERS)
    warmup_epochs: int = bounded(0, ge=0)
    step_size: int = bounded(30, ge=1)
    gamma: float = bounded(0.1, gt=0)
    label_smoothing: float = bounded(0.0, ge=0, lt=1)


@dataclass
class TrackingConfig:
    wandb: str = bounded("offline", choices=WANDB_MODES)
    project: str = "paralab"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)
    checkpoints: bool = True


@dataclass
class RunConfig:
    name: str = bounded("run", check=_name_check)
    seed: int = bounded(0, ge=0, le=SEED_MAX, hint=" (numpy's seed range)")
    output_dir: str = bounded("runs", check=_output_dir_check)
    model: Any = None
    data: Any = None
    task: Any = None
    paradigm: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
