"""The trainer's device settings -> the one torch device an Avalanche strategy trains on.

Avalanche strategies train on one device per run. ``trainer.accelerator`` picks it (``auto``: a
GPU when there is one); ``trainer.devices`` may name one GPU (``devices=[1]``); more than one
device, another Lightning strategy or reduced precision is a config error.

Several devices serve continual learning as several runs, one per device: a suite run with
``--parallel N`` and ``resources: {num_gpus: 1}`` places each run on a GPU of its own (Ray sets
its ``CUDA_VISIBLE_DEVICES``). One run across devices would go through Avalanche's
experimental ``DistributedHelper``; paralab's methods keep per-process state (replay buffers,
SI's importances, iCaRL's exemplars, checkpoints) that would each have to agree across ranks,
which is not verified, so it stays a config error.
"""

from __future__ import annotations

import torch

from paralab.errors import ConfigError
from paralab.platform.schema import TrainerConfig

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def _device_index(devices) -> int | None:
    if isinstance(devices, list | tuple) and len(devices) == 1:
        return int(devices[0])
    if str(devices) in ("1", "auto"):
        return None
    raise ConfigError(
        f"trainer.devices={devices}: a continual run trains on one device. Set trainer.devices=1 "
        "(or [k] for GPU k); to use several devices, run several continual runs at once, one "
        "per device: paralab bench <suite> --parallel N, with resources: {num_gpus: 1} in the "
        "suite file"
    )


def check_device(trainer: TrainerConfig) -> None:
    if trainer.accelerator not in ACCELERATORS:
        raise ConfigError(
            f"trainer.accelerator={trainer.accelerator!r}: choose one of {', '.join(ACCELERATORS)}"
        )
    _device_index(trainer.devices)
    if trainer.strategy not in ("auto", "single_device") or trainer.num_nodes != 1:
        raise ConfigError(
            f"trainer.strategy={trainer.strategy}, trainer.num_nodes={trainer.num_nodes}: a "
            "continual run trains on one device; set trainer.strategy=auto trainer.num_nodes=1"
        )
    if trainer.precision not in ("32-true", "32", 32):
        raise ConfigError(
            f"trainer.precision={trainer.precision}: continual runs train in "
            "32-bit; set trainer.precision=32-true"
        )
    if trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={trainer.accelerator}: no CUDA GPU is visible; "
            "use trainer.accelerator=cpu (or auto)"
        )
    if trainer.accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps: MPS is not available; use cpu or auto")


def resolve_device(trainer: TrainerConfig) -> torch.device:
    index = _device_index(trainer.devices)
    accelerator = trainer.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        return torch.device("cuda", index or 0)
    return torch.device(accelerator)
