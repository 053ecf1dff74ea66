"""The ``paradigm=continual`` options. Strategy options live flat here, typed, with their valid
ranges (scenario and method choices are checked by the paradigm against its methods table)."""

from __future__ import annotations

from dataclasses import dataclass, field

from paralab.platform.bounds import bounded
from paralab.platform.paradigm import ParadigmConfig


@dataclass
class ContinualConfig(ParadigmConfig):
    """See configs/paradigm/continual.yaml for what each key means."""

    name: str = "continual"
    scenario: str = "class"  # class | task | domain
    n_experiences: int = bounded(5, ge=1)
    class_order_seed: int | None = bounded(0, ge=0)  # null: natural order; domain: permutation
    domain_shift: str = "permuted"  # domain scenario only: permuted | rotated | split
    strategy: str = "naive"
    plugins: list[str] = field(default_factory=list)
    epochs: int | None = bounded(None, ge=1)  # per experience; null: trainer.max_epochs
    iterations: int | None = bounded(None, ge=1)  # per experience, instead of epochs
    # strategy and plugin options (each used only by the methods named in its comment)
    mem_size: int = bounded(500, ge=1)  # replay, gdumb, der, icarl: exemplars kept
    ewc_lambda: float = bounded(100.0, ge=0)  # ewc, online_ewc
    ewc_decay: float = bounded(0.9, ge=0, le=1)  # online_ewc
    si_lambda: float = bounded(1.0, ge=0)  # si
    lwf_alpha: float = bounded(1.0, ge=0)  # lwf
    lwf_temperature: float = bounded(2.0, gt=0)  # lwf
    patterns_per_exp: int = bounded(100, ge=1)  # gem, agem: memory per experience
    agem_sample_size: int = bounded(256, ge=1)  # agem
    gem_memory_strength: float = bounded(0.5, ge=0)  # gem
    der_alpha: float = bounded(0.1, ge=0)  # der: logit distillation weight
    der_beta: float = bounded(0.5, ge=0)  # der: label replay weight
