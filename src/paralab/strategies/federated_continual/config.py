"""The ``paradigm=federated_continual`` options: the federated ones, a stream, a local method.

Why a paradigm of its own rather than a continual strategy inside ``paradigm=federated``: the
two parents disagree about time. A federated run counts rounds, a continual run experiences;
here the stream sets the phases (``rounds_per_task`` rounds on each experience) and the rounds
run inside them, so both the accuracy matrix (one row per phase) and the per-round curves exist.
Every federated key (strategy, clients, partition, faults, Byzantine clients, Ray) keeps its
meaning, applied to the current experience's images.
"""

from __future__ import annotations

from dataclasses import dataclass

from paralab.platform.bounds import bounded
from paralab.strategies.federated.config import FederatedConfig

#: what each client may run locally between the rounds it takes part in
LOCAL_METHODS = ("naive", "replay", "ewc", "lwf")
SCHEDULES = ("sync", "async")
SERVER_METHODS = ("none", "prototypes")


@dataclass
class FederatedContinualConfig(FederatedConfig):
    """See configs/paradigm/federated_continual.yaml for what each key means."""

    name: str = "federated_continual"
    rounds: int | None = bounded(None, ge=1)  # null: rounds_per_task * n_experiences
    rounds_per_task: int = bounded(3, ge=1)
    scenario: str = bounded("class", choices=("class", "domain"))
    n_experiences: int = bounded(5, ge=1)
    class_order_seed: int | None = bounded(0, ge=0)  # null: natural order
    domain_shift: str = bounded("permuted", choices=("permuted", "rotated"))
    schedule: str = bounded("sync", choices=SCHEDULES)
    method: str = bounded("naive", choices=LOCAL_METHODS)
    mem_size: int = bounded(200, ge=1)  # replay: images each client keeps over all its tasks
    ewc_lambda: float = bounded(100.0, ge=0)  # ewc: weight of the importance penalty
    lwf_alpha: float = bounded(1.0, ge=0)  # lwf: weight of the distillation term
    lwf_temperature: float = bounded(2.0, gt=0)  # lwf
    client_eval: bool = False  # score each client's own model on its seen experiences per phase
    server_method: str = bounded("none", choices=SERVER_METHODS)
    proto_steps: int = bounded(50, ge=1)  # prototypes: server steps on the head per round
    proto_lr: float = bounded(0.01, gt=0)  # prototypes: their learning rate (SGD)
    proto_batch: int = bounded(256, ge=1)  # prototypes: features drawn per step

    def __post_init__(self) -> None:
        if self.rounds is None:
            self.rounds = self.rounds_per_task * self.n_experiences
