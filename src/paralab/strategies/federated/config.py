"""The ``paradigm=federated`` config section and its checks (run before any file is written)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from paralab.errors import ConfigError
from paralab.strategies.registry import ParadigmConfig

SCHEMES = ("iid", "dirichlet", "shards")
ATTACKS = ("sign_flip", "gaussian", "label_flip")


@dataclass
class PartitionConfig:
    """How the training split is divided among clients (always seeded)."""

    scheme: str = "iid"
    alpha: float = 0.5  # dirichlet concentration: smaller is more skewed
    shards_per_client: int = 2  # shards: sort by label, deal this many shards to each client
    seed: int | None = None  # null: the run's seed


@dataclass
class StrategyOptions:
    """Arguments of the Flower strategies; each strategy reads the ones it takes."""

    proximal_mu: float = 0.01  # fedprox: travels to clients in the round config
    server_learning_rate: float = 1.0  # fedavgm
    server_momentum: float = 0.9  # fedavgm
    eta: float = 0.01  # fedadam, fedyogi, fedadagrad: server learning rate
    eta_l: float = 0.01
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3
    num_malicious: int = 0  # krum, multikrum, bulyan
    num_selected: int = 1  # multikrum: how many updates are averaged
    trim_beta: float = 0.2  # fedtrimmedavg: fraction cut at each end
    noise_multiplier: float = 0.1  # dp_fixed_clipping (server side, wraps fedavg)
    clipping_norm: float = 10.0


@dataclass
class FaultConfig:
    """Simulated failures, drawn per round and client from the run's seed."""

    crash_fraction: float = 0.0  # chance that a sampled client crashes after training
    dropout_fraction: float = 0.0  # chance that a sampled client drops out before training
    straggler_fraction: float = 0.0  # chance that a sampled client is slow this round
    straggler_delay_s: float = 1.0


@dataclass
class ByzantineConfig:
    """A fixed set of clients (drawn from the seed) that send poisoned updates every round."""

    fraction: float = 0.0
    attack: str = "sign_flip"  # sign_flip | gaussian | label_flip
    scale: float = 1.0  # sign_flip: update multiplier; gaussian: noise std


@dataclass
class ClientResources:
    """Ray resources per client; fractional GPUs pack several clients on one device."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class FederatedConfig(ParadigmConfig):
    name: str = "federated"
    strategy: str = "fedavg"
    num_clients: int = 10
    rounds: int = 5
    fraction_train: float = 1.0
    min_train_clients: int = 2
    fraction_evaluate: float = 0.5
    min_evaluate_clients: int = 1
    local_epochs: int = 1
    batch_size: int | None = None  # null: data.batch_size
    options: StrategyOptions = field(default_factory=StrategyOptions)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    byzantine: ByzantineConfig = field(default_factory=ByzantineConfig)
    client_resources: ClientResources = field(default_factory=ClientResources)
    ray_address: str | None = None  # null: $RAY_ADDRESS, else a local Ray started for the run
    ray_num_cpus: int | None = None  # local Ray only; null: all cores of this machine
    timeout_s: float = 3600.0  # the whole simulation; a hung run is stopped after this
    round_timeout_s: float = 600.0  # replies later than this are counted as failed
    abort_after_failed_rounds: int = 3  # consecutive rounds with no successful client
    target_acc: float = 0.85  # reported as rounds_to_<target>
    centralized_eval: bool = True
    eval_subset: int | None = None  # test images per round (seeded); the last round uses all


def _fraction(key: str, value: float, *, closed: bool = True) -> None:
    ok = 0.0 <= value <= 1.0 if closed else 0.0 < value <= 1.0
    if not ok:
        bounds = "[0, 1]" if closed else "(0, 1]"
        raise ConfigError(f"paradigm.{key}={value}: must be in {bounds}")


def check_config(cfg: FederatedConfig, num_train: int, num_classes: int) -> None:
    """Every rule that a config can break, with the key, the valid range and the fix."""
    from paralab.strategies.federated.strategies import STRATEGIES

    if cfg.strategy not in STRATEGIES:
        raise ConfigError(
            f"paradigm.strategy={cfg.strategy!r}: unknown federated strategy. "
            f"Choose one of: {', '.join(STRATEGIES)}"
        )
    for key in ("num_clients", "rounds", "local_epochs", "min_train_clients"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"paradigm.{key}={getattr(cfg, key)}: must be at least 1")
    if cfg.min_evaluate_clients < 0:
        raise ConfigError("paradigm.min_evaluate_clients must be >= 0")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError(f"paradigm.batch_size={cfg.batch_size}: must be >= 1 (or null)")
    _fraction("fraction_train", cfg.fraction_train, closed=False)
    _fraction("fraction_evaluate", cfg.fraction_evaluate)
    if cfg.min_train_clients > cfg.num_clients:
        raise ConfigError(
            f"paradigm.min_train_clients={cfg.min_train_clients} exceeds "
            f"paradigm.num_clients={cfg.num_clients}: lower it or add clients"
        )
    if cfg.fraction_evaluate > 0 and cfg.min_evaluate_clients > cfg.num_clients:
        raise ConfigError(
            f"paradigm.min_evaluate_clients={cfg.min_evaluate_clients} exceeds "
            f"paradigm.num_clients={cfg.num_clients}"
        )
    _check_partition(cfg, num_train, num_classes)
    for key in ("crash_fraction", "dropout_fraction", "straggler_fraction"):
        _fraction(f"faults.{key}", getattr(cfg.faults, key))
    _fraction("byzantine.fraction", cfg.byzantine.fraction)
    if cfg.byzantine.attack not in ATTACKS:
        raise ConfigError(
            f"paradigm.byzantine.attack={cfg.byzantine.attack!r}: "
            f"choose one of {', '.join(ATTACKS)}"
        )
    res = cfg.client_resources
    if res.num_cpus <= 0 or res.num_gpus < 0:
        raise ConfigError(
            "paradigm.client_resources: num_cpus must be > 0 and num_gpus >= 0 "
            f"(got num_cpus={res.num_cpus}, num_gpus={res.num_gpus})"
        )
    if res.num_gpus > 1 and res.num_gpus != int(res.num_gpus):
        raise ConfigError("paradigm.client_resources.num_gpus above 1 must be a whole number")
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address and cfg.ray_num_cpus is not None:
        raise ConfigError(
            "paradigm.ray_num_cpus is for the local Ray a run starts; with "
            f"ray_address={address!r} (or RAY_ADDRESS) the cluster's own resources count. "
            "Remove one of the two"
        )
    if cfg.ray_num_cpus is not None and cfg.ray_num_cpus < res.num_cpus:
        raise ConfigError(
            f"paradigm.ray_num_cpus={cfg.ray_num_cpus} cannot fit one client needing "
            f"client_resources.num_cpus={res.num_cpus}"
        )
    for key in ("timeout_s", "round_timeout_s"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"paradigm.{key} must be positive")
    if cfg.eval_subset is not None and cfg.eval_subset < 1:
        raise ConfigError("paradigm.eval_subset must be >= 1 (or null for the whole test split)")
    if cfg.abort_after_failed_rounds < 1:
        raise ConfigError("paradigm.abort_after_failed_rounds must be at least 1")
    from paralab.strategies.federated.strategies import check_options

    check_options(cfg)


def _check_partition(cfg: FederatedConfig, num_train: int, num_classes: int) -> None:
    part = cfg.partition
    if part.scheme not in SCHEMES:
        raise ConfigError(
            f"paradigm.partition.scheme={part.scheme!r}: choose one of {', '.join(SCHEMES)}"
        )
    if part.scheme == "dirichlet" and part.alpha <= 0:
        raise ConfigError(f"paradigm.partition.alpha={part.alpha}: must be positive (e.g. 0.3)")
    if part.scheme == "shards" and part.shards_per_client < 1:
        raise ConfigError("paradigm.partition.shards_per_client must be at least 1")
    needed = cfg.num_clients * (part.shards_per_client if part.scheme == "shards" else 1)
    if needed > num_train:
        raise ConfigError(
            f"paradigm.num_clients={cfg.num_clients} with partition.scheme={part.scheme} needs "
            f"at least {needed} training images; the training split has {num_train}. "
            "Use fewer clients"
        )
