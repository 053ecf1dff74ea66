"""The ``paradigm=continual`` options. Strategy options live flat here, typed and validated."""

from __future__ import annotations

from dataclasses import dataclass, field

from paralab.strategies.registry import ParadigmConfig


@dataclass
class ContinualConfig(ParadigmConfig):
    """See configs/paradigm/continual.yaml for what each key means."""

    name: str = "continual"
    scenario: str = "class"  # class | task | domain
    n_experiences: int = 5
    class_order_seed: int | None = 0  # null: natural class order; domain: permutation seed
    domain_shift: str = "permuted"  # domain scenario only: permuted | rotated
    strategy: str = "naive"
    plugins: list[str] = field(default_factory=list)
    epochs: int | None = None  # per experience; null: trainer.max_epochs
    # strategy and plugin options (each used only by the methods named in its comment)
    mem_size: int = 500  # replay, gdumb, der, icarl: exemplars kept
    ewc_lambda: float = 100.0  # ewc, online_ewc
    ewc_decay: float = 0.9  # online_ewc
    si_lambda: float = 1.0  # si
    lwf_alpha: float = 1.0  # lwf
    lwf_temperature: float = 2.0  # lwf
    patterns_per_exp: int = 100  # gem, agem: memory per experience
    agem_sample_size: int = 256  # agem
    gem_memory_strength: float = 0.5  # gem
    der_alpha: float = 0.1  # der: logit distillation weight
    der_beta: float = 0.5  # der: label replay weight
