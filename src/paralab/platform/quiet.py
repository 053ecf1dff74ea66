"""Silence third-party output that users cannot act on, at the source: by message or logger name,
never by warning category for the whole process."""

from __future__ import annotations

import logging
import os
import warnings

QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "WANDB_SILENT": "true",
}

IGNORED_WARNINGS = [
    r".*does not have many workers.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*litlogger.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*Consider setting `persistent_workers=True`.*",
    r".*torch.use_deterministic_algorithms.*",
    r".*LeafSpec.*",
    r".*Experiment logs directory .* exists and is not empty.*",
]


def quiet() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for pattern in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.distributed",
        "lightning.pytorch.utilities.distributed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
