"""The ``paradigm=federated`` config section and its checks (run before any file is written)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from paralab.errors import ConfigError
from paralab.platform.bounds import bounded, check_bounds
from paralab.platform.paradigm import ParadigmConfig

SCHEMES = ("iid", "dirichlet", "shards", "sampled")
ATTACKS = ("sign_flip", "gaussian", "label_flip")


@dataclass
class PartitionConfig:
    """How the training split is divided among clients (always seeded)."""

    scheme: str = bounded("iid", choices=SCHEMES)
    alpha: float = bounded(0.5, gt=0)  # dirichlet concentration: smaller is more skewed
    shards_per_client: int = bounded(2, ge=1)  # shards: sort by label, deal this many per client
    # sampled: each client draws this many images (its own seeded draw; clients overlap)
    samples_per_client: int = bounded(60, ge=1, le=1_000_000)
    seed: int | None = bounded(None, ge=0)  # null: the run's seed


@dataclass
class StrategyOptions:
    """Arguments of the Flower strategies; each strategy reads the ones it takes."""

    proximal_mu: float = bounded(0.01, ge=0)  # fedprox: travels to clients in the round config
    server_learning_rate: float = bounded(1.0, gt=0)  # fedavgm
    server_momentum: float = bounded(0.9, ge=0, lt=1)  # fedavgm
    eta: float = bounded(0.01, gt=0)  # fedadam, fedyogi, fedadagrad: server learning rate
    eta_l: float = bounded(0.01, gt=0)
    beta_1: float = bounded(0.9, ge=0, lt=1)
    beta_2: float = bounded(0.99, ge=0, lt=1)
    tau: float = bounded(1e-3, gt=0)
    num_malicious: int = bounded(0, ge=0)  # krum, multikrum, bulyan
    num_selected: int = bounded(1, ge=1)  # multikrum: how many updates are averaged
    trim_beta: float = bounded(0.2, ge=0, lt=0.5)  # fedtrimmedavg: fraction cut at each end
    noise_multiplier: float = bounded(0.1, ge=0)  # dp_fixed_clipping (server side, wraps fedavg)
    clipping_norm: float = bounded(10.0, gt=0)


@dataclass
class FaultConfig:
    """Simulated failures, drawn per round and client from the run's seed."""

    crash_fraction: float = bounded(0.0, ge=0, le=1)  # a sampled client crashes after training
    dropout_fraction: float = bounded(0.0, ge=0, le=1)  # a sampled client drops out before
    straggler_fraction: float = bounded(0.0, ge=0, le=1)  # a sampled client is slow this round
    straggler_delay_s: float = bounded(1.0, ge=0)


@dataclass
class ByzantineConfig:
    """A fixed set of clients (drawn from the seed) that send poisoned updates every round."""

    fraction: float = bounded(0.0, ge=0, le=1)
    attack: str = bounded("sign_flip", choices=ATTACKS)
    scale: float = bounded(1.0, ge=0)  # sign_flip: update multiplier; gaussian: noise std


@dataclass
class ClientResources:
    """Ray resources per client; fractional GPUs pack several clients on one device."""

    num_cpus: float = bounded(1.0, gt=0)
    num_gpus: float = bounded(0.0, ge=0)


@dataclass
class FederatedConfig(ParadigmConfig):
    name: str = "federated"
    strategy: str = "fedavg"
    num_clients: int = bounded(10, ge=1)
    rounds: int = bounded(5, ge=1)
    fraction_train: float = bounded(1.0, gt=0, le=1)
    min_train_clients: int = bounded(2, ge=1)
    fraction_evaluate: float = bounded(0.5, ge=0, le=1)
    min_evaluate_clients: int = bounded(1, ge=0)
    local_epochs: int = bounded(1, ge=1)
    batch_size: int | None = bounded(None, ge=1)  # null: data.batch_size
    options: StrategyOptions = field(default_factory=StrategyOptions)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    byzantine: ByzantineConfig = field(default_factory=ByzantineConfig)
    client_resources: ClientResources = field(default_factory=ClientResources)
    ray_address: str | None = None  # null: $RAY_ADDRESS, else a local Ray started for the run
    ray_num_cpus: int | None = bounded(None, ge=1)  # local Ray only; null: all cores here
    timeout_s: float = bounded(3600.0, gt=0)  # the whole simulation; a hung run stops after this
    round_timeout_s: float = bounded(600.0, gt=0)  # replies later than this count as failed
    abort_after_failed_rounds: int = bounded(3, ge=1)  # consecutive rounds with no success
    target: float = bounded(0.85, ge=0, le=1)  # of test/<headline>: reported as rounds_to_<target>
    stop_at_target: bool = False  # end the run at the first round that reaches the target
    centralized_eval: bool = True
    eval_subset: int | None = bounded(None, ge=1)  # test images per round (seeded); last: all


def check_config(cfg: FederatedConfig, num_train: int, num_classes: int) -> None:
    """The rules that tie keys together (each key's own range is declared on its field and
    checked when the config is validated), with the keys, the valid range and the fix."""
    from paralab.strategies.federated.strategies import STRATEGIES

    check_bounds("paradigm", cfg)
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(
            f"paradigm.strategy={cfg.strategy!r}: unknown federated strategy. "
            f"Choose one of: {', '.join(STRATEGIES)}"
        )
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
    if cfg.stop_at_target and (not cfg.centralized_eval or cfg.eval_subset is not None):
        raise ConfigError(
            "paradigm.stop_at_target=true judges every round on the whole test split: set "
            "paradigm.centralized_eval=true and paradigm.eval_subset=null (or stop_at_target="
            "false)"
        )
    res = cfg.client_resources
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
    from paralab.strategies.federated.strategies import check_options

    check_options(cfg)


def _check_partition(cfg: FederatedConfig, num_train: int, num_classes: int) -> None:
    part = cfg.partition
    if part.scheme == "sampled":  # any number of clients: each draws its own images
        if part.samples_per_client > num_train:
            raise ConfigError(
                f"paradigm.partition.samples_per_client={part.samples_per_client} exceeds the "
                f"training split ({num_train} images): a client draws without replacement. "
                "Lower it"
            )
        return
    needed = cfg.num_clients * (part.shards_per_client if part.scheme == "shards" else 1)
    if needed > num_train:
        raise ConfigError(
            f"paradigm.num_clients={cfg.num_clients} with partition.scheme={part.scheme} needs "
            f"at least {needed} training images; the training split has {num_train}. "
            "Use fewer clients"
        )
