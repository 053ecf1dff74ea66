"""The one torch device a single-process step runs on (probes, the untrained paradigm).

Lightning picks devices for supervised runs and the continual paradigm checks its own settings
strictly (``strategies/continual/devices.py``); work that runs beside them in one process takes
the accelerator the run asked for when it is present here, else the CPU.
"""

from __future__ import annotations

import torch

from paralab.platform.schema import TrainerConfig


def one_device(trainer: TrainerConfig) -> torch.device:
    """``trainer.accelerator`` (and the first of ``trainer.devices``) when available, else CPU."""
    accelerator = trainer.accelerator
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        ids = trainer.devices if isinstance(trainer.devices, list | tuple) else [0]
        return torch.device("cuda", int(ids[0]) if ids else 0)
    if accelerator in ("auto", "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
