"""Config name -> Flower strategy (``flwr.serverapp.strategy``, Message API); none re-implemented.

What a client must do for a strategy travels in the round's ConfigRecord:

- ``fedprox``: Flower's FedProx puts ``proximal-mu`` in the train config; the client adds
  ``mu/2 * ||w - w_global||^2`` to its loss (see :mod:`.client`).
- every other strategy needs nothing from clients beyond plain local training.

``dp_fixed_clipping`` is central DP: Flower's server-side fixed clipping wrapped around FedAvg
(updates clipped to ``options.clipping_norm``, Gaussian noise ``noise_multiplier * norm``).
Strategy state (server momentum, Adam moments, the current model) is saved with every checkpoint
so that ``--resume`` continues exactly where the run stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from paralab.errors import ConfigError

if TYPE_CHECKING:
    from paralab.strategies.federated.config import FederatedConfig

STRATEGIES = (
    "fedavg",
    "fedprox",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "krum",
    "multikrum",
    "bulyan",
    "fedmedian",
    "fedtrimmedavg",
    "dp_fixed_clipping",
)

# Attributes in which Flower's strategies keep state between rounds.
STATE_ATTRS = ("current_arrays", "m_t", "v_t", "momentum_vector")


def sampled_per_round(cfg: FederatedConfig) -> int:
    """How many clients Flower samples for training each round (its own rule)."""
    return max(int(cfg.num_clients * cfg.fraction_train), cfg.min_train_clients)


def check_options(cfg: FederatedConfig) -> None:
    """The robust aggregators' conditions on the number of updates, before Flower asserts (each
    option's own range is declared on its field)."""
    n, f, opts = sampled_per_round(cfg), cfg.options.num_malicious, cfg.options
    need = {"krum": 2 * f + 3, "multikrum": 2 * f + 3, "bulyan": 4 * f + 3}.get(cfg.strategy)
    if need is not None and n < need:
        raise ConfigError(
            f"paradigm.strategy={cfg.strategy} with options.num_malicious={f} needs at least "
            f"{need} clients per round; {n} are sampled. Raise fraction_train/min_train_clients "
            "or lower options.num_malicious"
        )
    if cfg.strategy == "multikrum" and opts.num_selected > n:  # >= 1 is declared on the field
        raise ConfigError(
            f"paradigm.options.num_selected={opts.num_selected} exceeds the {n} clients sampled "
            "per round: multikrum averages at most that many. Lower it"
        )


def build_strategy(cfg: FederatedConfig):
    """The Flower strategy object the config names."""
    from flwr.serverapp import strategy as fl

    o = cfg.options
    common: dict[str, Any] = dict(
        fraction_train=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_train_clients,
        min_evaluate_nodes=cfg.min_evaluate_clients if cfg.fraction_evaluate > 0 else 0,
        min_available_nodes=cfg.num_clients,
    )
    opt = dict(eta=o.eta, eta_l=o.eta_l, tau=o.tau)
    name = cfg.strategy
    if name == "fedavg":
        return fl.FedAvg(**common)
    if name == "fedprox":
        return fl.FedProx(**common, proximal_mu=o.proximal_mu)
    if name == "fedavgm":
        return fl.FedAvgM(
            **common, server_learning_rate=o.server_learning_rate, server_momentum=o.server_momentum
        )
    if name == "fedadam":
        return fl.FedAdam(**common, **opt, beta_1=o.beta_1, beta_2=o.beta_2)
    if name == "fedyogi":
        return fl.FedYogi(**common, **opt, beta_1=o.beta_1, beta_2=o.beta_2)
    if name == "fedadagrad":
        return fl.FedAdagrad(**common, **opt)
    if name == "krum":
        return fl.Krum(**common, num_malicious_nodes=o.num_malicious)
    if name == "multikrum":
        return fl.MultiKrum(
            **common, num_malicious_nodes=o.num_malicious, num_nodes_to_select=o.num_selected
        )
    if name == "bulyan":
        return fl.Bulyan(**common, num_malicious_nodes=o.num_malicious)
    if name == "fedmedian":
        return fl.FedMedian(**common)
    if name == "fedtrimmedavg":
        return fl.FedTrimmedAvg(**common, beta=o.trim_beta)
    if name == "dp_fixed_clipping":
        return fl.DifferentialPrivacyServerSideFixedClipping(
            fl.FedAvg(**common),
            noise_multiplier=o.noise_multiplier,
            clipping_norm=o.clipping_norm,
            num_sampled_clients=sampled_per_round(cfg),
        )
    raise ConfigError(f"paradigm.strategy={name!r}: choose one of {', '.join(STRATEGIES)}")


def _holders(strategy) -> list:
    inner = getattr(strategy, "strategy", None)
    return [strategy] + ([inner] if inner is not None else [])


def strategy_state(strategy) -> list[dict[str, Any]]:
    """The strategy's between-round state as tensors (loadable with ``weights_only=True``)."""
    import numpy as np
    import torch
    from flwr.app import ArrayRecord

    def encode(value: Any) -> Any:
        if isinstance(value, ArrayRecord):
            return {
                "kind": "arrayrecord",
                "items": {k: torch.from_numpy(v.numpy()) for k, v in value.items()},
            }
        if isinstance(value, dict):
            return {
                "kind": "dict",
                "items": {k: torch.from_numpy(np.asarray(v)) for k, v in value.items()},
            }
        if isinstance(value, list):
            return {"kind": "list", "items": [torch.from_numpy(np.asarray(v)) for v in value]}
        return None

    return [
        {a: encode(getattr(h, a)) for a in STATE_ATTRS if hasattr(h, a)} for h in _holders(strategy)
    ]


def load_strategy_state(strategy, state: list[dict[str, Any]]) -> None:
    from flwr.app import Array, ArrayRecord

    def decode(value: Any) -> Any:
        if value is None:
            return None
        items = value["items"]
        if value["kind"] == "arrayrecord":
            return ArrayRecord({k: Array(v.numpy()) for k, v in items.items()})
        if value["kind"] == "dict":
            return {k: v.numpy() for k, v in items.items()}
        return [v.numpy() for v in items]

    for holder, saved in zip(_holders(strategy), state, strict=False):
        for attr, value in saved.items():
            setattr(holder, attr, decode(value))
