"""The continual methods, Mammoth-style: one table of names -> Avalanche strategies and plugins.

Each entry names an Avalanche 0.6 class, the scenarios and tasks it supports and how its options
come from :class:`ContinualConfig`. A new method is one row here; tests loop over the table (every
method x every task it declares runs a short fit).

Classification-only methods read class labels or one logit per class: iCaRL (exemplars and
nearest class means), GDumb (a class-balanced buffer), DER (replayed logits), LwF (distillation
over per-class logits). GEM and A-GEM project flattened gradients and work with any loss.
EWC, MAS, GEM and A-GEM call the model on raw images themselves (``own_forward``), which a
pretext task (it makes its inputs from the images) cannot give them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paralab.errors import ConfigError
from paralab.strategies.continual.config import ContinualConfig

ALL = ("class", "task", "domain")
CLASSIFICATION = ("classification",)


@dataclass(frozen=True)
class Method:
    """An Avalanche class (strategy in ``avalanche.training.supervised``, or plugin)."""

    avalanche_class: str
    scenarios: tuple[str, ...]
    options: Callable[[ContinualConfig], dict[str, Any]]
    description: str
    #: False where Avalanche flattens gradients with ``.view(-1)``, which NHWC tensors refuse
    channels_last: bool = True
    #: the tasks (``task.name``) the method can train; None: every task
    tasks: tuple[str, ...] | None = None
    #: the method calls the model on an experience's raw images itself (importances, reference
    #: gradients, distillation), so it cannot train a task whose ``unpack`` makes the inputs
    #: (a pretext task: rotated copies, shuffled tiles, augmented views)
    own_forward: bool = False

    def trains(self, task: str, makes_inputs: bool = False) -> bool:
        return (self.tasks is None or task in self.tasks) and not (
            makes_inputs and self.own_forward
        )


def _none(cfg: ContinualConfig) -> dict[str, Any]:
    return {}


STRATEGIES: dict[str, Method] = {
    "naive": Method("Naive", ALL, _none, "fine-tuning on each experience: the lower bound"),
    "joint": Method("JointTraining", ALL, _none, "all experiences at once: the upper bound"),
    "cumulative": Method("Cumulative", ALL, _none, "retrain on all experiences seen so far"),
    "replay": Method("Replay", ALL, lambda c: {"mem_size": c.mem_size}, "experience replay"),
    "ewc": Method(
        "EWC",
        ALL,
        lambda c: {"ewc_lambda": c.ewc_lambda, "mode": "separate"},
        "elastic weight consolidation",
        own_forward=True,
    ),
    "online_ewc": Method(
        "EWC",
        ALL,
        lambda c: {"ewc_lambda": c.ewc_lambda, "mode": "online", "decay_factor": c.ewc_decay},
        "online EWC (one running importance)",
        own_forward=True,
    ),
    "si": Method(
        "SynapticIntelligence", ALL, lambda c: {"si_lambda": c.si_lambda}, "synaptic intelligence"
    ),
    "lwf": Method(
        "LwF",
        ALL,
        lambda c: {"alpha": c.lwf_alpha, "temperature": c.lwf_temperature},
        "learning without forgetting (distillation)",
        tasks=CLASSIFICATION,
        own_forward=True,
    ),
    "agem": Method(
        "AGEM",
        ALL,
        lambda c: {"patterns_per_exp": c.patterns_per_exp, "sample_size": c.agem_sample_size},
        "averaged gradient episodic memory",
        channels_last=False,
        own_forward=True,
    ),
    "gem": Method(
        "GEM",
        ALL,
        lambda c: {
            "patterns_per_exp": c.patterns_per_exp,
            "memory_strength": c.gem_memory_strength,
        },
        "gradient episodic memory (quadprog)",
        own_forward=True,
    ),
    "icarl": Method(
        "ICaRL",
        ("class",),
        lambda c: {"memory_size": c.mem_size, "buffer_transform": None, "fixed_memory": True},
        "iCaRL: exemplars + nearest-mean classifier; new classes per experience",
        tasks=CLASSIFICATION,
    ),
    "gdumb": Method(
        "GDumb",
        ("class", "domain"),
        lambda c: {"mem_size": c.mem_size},
        "greedy class-balanced buffer, retrained from scratch",
        tasks=CLASSIFICATION,
    ),
    "der": Method(
        "DER",
        ("class", "domain"),
        lambda c: {"mem_size": c.mem_size, "alpha": c.der_alpha, "beta": c.der_beta},
        "dark experience replay (one head: logits are replayed)",
        tasks=CLASSIFICATION,
    ),
}

PLUGINS: dict[str, Method] = {
    "replay": Method("ReplayPlugin", ALL, lambda c: {"mem_size": c.mem_size}, "replay buffer"),
    "ewc": Method(
        "EWCPlugin", ALL, lambda c: {"ewc_lambda": c.ewc_lambda}, "EWC penalty", own_forward=True
    ),
    "si": Method(
        "SynapticIntelligencePlugin", ALL, lambda c: {"si_lambda": c.si_lambda}, "SI penalty"
    ),
    "lwf": Method(
        "LwFPlugin",
        ALL,
        lambda c: {"alpha": c.lwf_alpha, "temperature": c.lwf_temperature},
        "LwF distillation",
        tasks=CLASSIFICATION,
        own_forward=True,
    ),
    "agem": Method(
        "AGEMPlugin",
        ALL,
        lambda c: {
            "patterns_per_experience": c.patterns_per_exp,
            "sample_size": c.agem_sample_size,
        },
        "A-GEM projection",
        channels_last=False,
        own_forward=True,
    ),
    "mas": Method("MASPlugin", ALL, _none, "memory aware synapses", own_forward=True),
}

#: Which plugin a strategy already contains (naming it again would apply it twice).
BUILT_IN_PLUGIN = {
    "replay": "replay",
    "ewc": "ewc",
    "online_ewc": "ewc",
    "si": "si",
    "lwf": "lwf",
    "agem": "agem",
}


def takes_channels_last(cfg: ContinualConfig) -> bool:
    """Whether the strategy and every plugin work on NHWC (``trainer.channels_last``) weights."""
    methods = [STRATEGIES[cfg.strategy], *(PLUGINS[p] for p in cfg.plugins)]
    return all(m.channels_last for m in methods)


def check_method(
    cfg: ContinualConfig, task: str = "classification", makes_inputs: bool = False
) -> None:
    """Raise :class:`ConfigError` for an unknown name, or a strategy or plugin that does not
    support the scenario or the task (``makes_inputs``: the task's ``Task.makes_inputs``)."""
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(
            f"paradigm.strategy={cfg.strategy!r}: unknown continual strategy. "
            f"Choose one of: {', '.join(STRATEGIES)}"
        )
    strategy = STRATEGIES[cfg.strategy]
    if cfg.scenario not in strategy.scenarios:
        raise ConfigError(
            f"paradigm.strategy={cfg.strategy} does not support paradigm.scenario={cfg.scenario}: "
            f"{cfg.strategy} supports {', '.join(strategy.scenarios)}. Pick one of those "
            f"scenarios, or a strategy that supports {cfg.scenario}: "
            f"{', '.join(n for n, m in STRATEGIES.items() if cfg.scenario in m.scenarios)}"
        )
    if not strategy.trains(task, makes_inputs):
        raise ConfigError(
            f"paradigm.strategy={cfg.strategy} does not support task={task} ({_why(strategy)}). "
            f"Strategies for {task}: "
            f"{', '.join(n for n, m in STRATEGIES.items() if m.trains(task, makes_inputs))}"
        )
    if len(set(cfg.plugins)) != len(cfg.plugins):
        raise ConfigError(f"paradigm.plugins={cfg.plugins}: a plugin is named twice")
    for name in cfg.plugins:
        if name not in PLUGINS:
            raise ConfigError(
                f"paradigm.plugins: unknown plugin {name!r}. Choose from: {', '.join(PLUGINS)}"
            )
        if BUILT_IN_PLUGIN.get(cfg.strategy) == name:
            raise ConfigError(
                f"paradigm.plugins: strategy {cfg.strategy} already applies {name}; "
                f"remove {name!r} from paradigm.plugins (or use strategy=naive plugins=[{name}])"
            )
        if cfg.scenario not in PLUGINS[name].scenarios:
            raise ConfigError(f"paradigm.plugins: {name} does not support scenario {cfg.scenario}")
        if not PLUGINS[name].trains(task, makes_inputs):
            usable = [n for n, m in PLUGINS.items() if m.trains(task, makes_inputs)]
            raise ConfigError(
                f"paradigm.plugins: {name} does not support task={task} ({_why(PLUGINS[name])}); "
                f"plugins for {task}: {', '.join(usable) or 'none'}"
            )
    if cfg.strategy in ("icarl", "joint") and cfg.plugins:
        raise ConfigError(
            f"paradigm.plugins: strategy {cfg.strategy} takes no plugins; set paradigm.plugins=[]"
        )


def _why(method: Method) -> str:
    if method.tasks is not None:
        return f"it supports {', '.join(method.tasks)}"
    return "it calls the model on raw images, and this task makes its inputs from them"
