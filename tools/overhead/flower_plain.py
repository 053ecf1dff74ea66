"""A plain-Flower reference for tools/overhead/federated.py: the same simulation, no paralab engine.

Written the way Flower's own PyTorch tutorial writes it: a ``NumPyClient`` built per message by
``client_fn`` (a fresh model, a ``DataLoader`` over the client's images, a plain training loop),
a ``ServerApp`` from ``ServerAppComponents`` with Flower's ``FedAvg``, and ``run_simulation`` on
the Ray backend (``client_resources``: ``--client-cpus`` per client, Ray started with
``--num-cpus``). paralab supplies only identical inputs, as Flower's tutorial gets them from
``flwr_datasets``: the registry model of ``fashion_mnist_federated`` (``cnn``; what
``trainer.*``/``model.*`` overrides say), its Fashion-MNIST training images, normalised by the
same statistics, the partition indices (``paralab.strategies.federated.partition``, ``iid`` over
``per_client * clients`` images or ``sampled``), and batch size, local epochs and SGD settings.
Every Ray worker loads them once and keeps them in a global, as the tutorial keeps its
``FederatedDataset``.

What it measures, for comparison with paralab's engine (seconds): ``round_s``, each round's
wall time (FedAvg's ``configure_fit`` to the end of ``aggregate_fit``; ``warm_round_s`` is the
median after the first) and ``compute_s``, the clients' own compute inside the actors (weights
in, training); from ``run_simulation``'s call (inputs loaded, initial model built, as paralab's
``time/startup_s`` counts from its server loop's creation): ``startup_s`` to round 1 (near
zero: Flower starts the ServerApp's thread before Ray, so Ray's start-up, the actors' imports and
their data loading fall in round 1), ``to_round1_s`` to its end, ``run_s`` to the return and
``teardown_s`` from the last round's end to the return (Ray shut down); and from the process
start: ``imports_s`` (torch, Flower, paralab's config code), ``setup_s`` (inputs and model in
this process) and ``from_process_start_to_round1_s``. One JSON line goes to stdout; Flower's own
logs stay as they are by default. Run from the repository root::

    python -m tools.overhead.flower_plain --per-client 600 --clients 10 --per-round 10 \
        --rounds 5 --num-cpus 2 [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import OrderedDict
from functools import partial

import numpy as np
import psutil
import torch
from flwr.app import Context
from flwr.client import ClientApp, NumPyClient
from flwr.common import ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.simulation import run_simulation
from torch.utils.data import DataLoader, TensorDataset

EXPERIMENT = "fashion_mnist_federated"
_INPUTS: dict[str, tuple] = {}  # per process: the one setup's config, data and partition


def load_inputs(setup: dict) -> tuple:
    """paralab's config, training images and client partition for ``setup``, once per process."""
    key = json.dumps(setup, sort_keys=True)
    if key not in _INPUTS:
        from paralab.platform.config import load
        from paralab.platform.runner import load_data
        from paralab.strategies.federated.partition import partition

        overrides = [f"seed={setup['seed']}", *setup["overrides"]]
        if setup["scheme"] == "iid":  # as tools.overhead.federated: just enough images
            overrides.append(f"data.train_limit={setup['per_client'] * setup['clients']}")
        config = load(EXPERIMENT, overrides)
        data = load_data(config)
        parts = partition(
            data.train.targets.numpy(), setup["clients"], setup["scheme"], seed=config.seed,
            samples_per_client=setup["per_client"],
        )  # fmt: skip
        _INPUTS.clear()
        _INPUTS[key] = (config, data, parts)
    return _INPUTS[key]


def build_net(config, data) -> torch.nn.Module:
    """The registry model the paralab run trains (its memory format included)."""
    from paralab.platform.models import InputSpec
    from paralab.platform.runner import build_model

    return build_model(config, InputSpec(data.in_channels, data.image_size, data.num_classes))


def get_weights(net: torch.nn.Module) -> list[np.ndarray]:
    return [val.cpu().numpy() for val in net.state_dict().values()]


def set_weights(net: torch.nn.Module, parameters: list[np.ndarray]) -> None:
    params = zip(net.state_dict().keys(), parameters, strict=True)
    net.load_state_dict(OrderedDict({k: torch.tensor(v) for k, v in params}), strict=True)


def train(net: torch.nn.Module, loader: DataLoader, epochs: int, optim) -> float:
    """The tutorial's loop: cross-entropy, SGD, every batch; returns the mean training loss."""
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=optim.label_smoothing)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov,
        weight_decay=optim.weight_decay,
    )  # fmt: skip
    net.train()
    total, batches = 0.0, 0
    for _ in range(epochs):
        for images, labels in loader:
            optimizer.zero_grad()
            loss = criterion(net(images), labels)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
    return total / max(1, batches)


class FlowerClient(NumPyClient):
    def __init__(self, net: torch.nn.Module, loader: DataLoader, epochs: int, optim) -> None:
        self.net, self.loader, self.epochs, self.optim = net, loader, epochs, optim

    def fit(self, parameters, config):
        started = time.perf_counter()
        set_weights(self.net, parameters)
        loss = train(self.net, self.loader, self.epochs, self.optim)
        metrics = {"train_loss": loss, "compute_s": time.perf_counter() - started,
                   "threads": torch.get_num_threads()}  # fmt: skip
        return get_weights(self.net), len(self.loader.dataset), metrics


def client_fn(setup: dict, context: Context):
    """Flower calls this for every message: a fresh model and loader for this partition."""
    config, data, parts = load_inputs(setup)
    cid = int(context.node_config["partition-id"])
    images, labels = data.train.__getitems__(parts[cid])  # normalised, as paralab trains them
    batch = config.paradigm.batch_size or config.data.batch_size
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch, shuffle=True)
    net = build_net(config, data)
    return FlowerClient(net, loader, config.paradigm.local_epochs, config.optim).to_client()


class TimedFedAvg(FedAvg):
    """FedAvg that notes when each round's training starts (``configure_fit``) and ends (after
    ``aggregate_fit``), the clients' summed compute, mean loss, torch threads and failures."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.started: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.compute: dict[int, float] = {}
        self.loss: dict[int, float] = {}
        self.threads: set[int] = set()
        self.failures = 0

    def configure_fit(self, server_round, parameters, client_manager):
        self.started[server_round] = time.perf_counter()
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        aggregated = super().aggregate_fit(server_round, results, failures)
        self.ended[server_round] = time.perf_counter()
        metrics = [r.metrics for _, r in results]
        self.compute[server_round] = sum(float(m["compute_s"]) for m in metrics)
        self.loss[server_round] = statistics.fmean([float(m["train_loss"]) for m in metrics] or [0])
        self.threads |= {int(m["threads"]) for m in metrics}
        self.failures += len(failures)
        return aggregated


def simulate(args: argparse.Namespace) -> dict:
    """One run_simulation; the figures of the module docstring counted from its call."""
    # Ray pickles functions of ``__main__`` by value, anew for every message, which would lose
    # the per-worker inputs; by module name (as a Flower app package is) workers import it once
    from tools.overhead.flower_plain import client_fn as importable_client_fn

    setup = {"per_client": args.per_client, "clients": args.clients, "scheme": args.scheme,
             "seed": args.seed, "overrides": list(args.overrides)}  # fmt: skip
    config, data, _ = load_inputs(setup)
    torch.manual_seed(config.seed)
    strategy = TimedFedAvg(
        fraction_fit=args.per_round / args.clients, min_fit_clients=args.per_round,
        fraction_evaluate=0.0, min_available_clients=args.clients,
        initial_parameters=ndarrays_to_parameters(get_weights(build_net(config, data))),
    )  # fmt: skip

    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(strategy=strategy, config=ServerConfig(args.rounds))

    engine = time.perf_counter()
    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=partial(importable_client_fn, setup)),
        num_supernodes=args.clients,
        backend_config={
            "client_resources": {"num_cpus": args.client_cpus, "num_gpus": 0.0},
            "init_args": {"num_cpus": args.num_cpus},
        },
    )
    run_s = time.perf_counter() - engine
    rounds = sorted(strategy.ended)
    round_s = [strategy.ended[r] - strategy.started[r] for r in rounds]
    between_s = [strategy.started[r + 1] - strategy.ended[r] for r in rounds[:-1]]
    return {
        "round_s": round_s, "between_rounds_s": between_s,
        "compute_s": [strategy.compute[r] for r in rounds],
        "train_loss": [strategy.loss[r] for r in rounds],
        "warm_round_s": statistics.median(round_s[1:]) if len(round_s) > 1 else None,
        "startup_s": strategy.started[1] - engine, "first_round_s": round_s[0],
        "to_round1_s": strategy.ended[1] - engine, "run_s": run_s, "engine_at": engine,
        "teardown_s": run_s - (strategy.ended[rounds[-1]] - engine),
        "client_threads": sorted(strategy.threads), "failures": strategy.failures,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    began = time.perf_counter()
    imports_s = time.time() - psutil.Process().create_time()
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--per-client", type=int, default=600, help="images per client")
    p.add_argument("--clients", type=int, default=10, help="clients in all")
    p.add_argument("--per-round", type=int, default=10, help="clients per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--scheme", choices=["iid", "sampled"], default="iid")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="Ray's CPUs")
    p.add_argument("--client-cpus", type=float, default=1, help="CPUs per client")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="paralab config overrides, e.g. model=mlp")
    args = p.parse_args(argv)
    if not 0 < args.per_round <= args.clients:
        p.error("--per-round: between 1 and --clients")
    figures = simulate(args)
    setup_s = figures.pop("engine_at") - began
    row = {
        "engine": "flower", "flwr": _flwr_version(), "per_client": args.per_client,
        "clients": args.clients, "per_round": args.per_round, "rounds": args.rounds,
        "scheme": args.scheme, "concurrency": int(args.num_cpus // args.client_cpus),
        **figures, "imports_s": imports_s, "setup_s": setup_s,
        "from_process_start_to_round1_s": imports_s + setup_s + figures["to_round1_s"],
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    if figures["failures"]:
        raise SystemExit(f"{figures['failures']} client failures: not a measurement")


def _flwr_version() -> str:
    from importlib.metadata import version

    return version("flwr")


if __name__ == "__main__":
    main()
