"""The Flower ClientApp: local training of the platform's model on one client's partition.

Design (measured, see ``tools/overhead/federated.py``): a Ray worker serves thousands of
client messages, so everything heavy lives in a per-worker cache built when the run starts
(:mod:`.engine`): the validated config, the dataset (the server's, read from Ray's object store;
images stay uint8), every client's
partition as an index array (recomputed from the seed: a few KB; the ``sampled`` scheme draws a
client's indices when its message comes, so nothing per client is kept), and one registry model. A
message only copies the global weights into that model and runs a lean loop: the run's task
(:mod:`paralab.platform.tasks`) unpacks, forwards and gives the loss, then backward and the
platform's optimizer from ``optim.*``; evaluation is the task's own metrics
(:func:`paralab.platform.tasks.evaluate.evaluate`).

Why not a Lightning ``Trainer`` (or the generic ``TaskModule``) per client: a Trainer per
message adds its set-up, hooks and logging to every client (tens of ms, more than the whole
training of a client with 60 images), and importing Lightning in a worker costs about 8 s of
start-up and 280 MB per worker on this machine. The loop is the task's training step without
that machinery; it uses only the task's forward and loss, so it works for every task and model.

Faults and attacks are drawn from ``(seed, round, client)``, so a resumed run replays them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from paralab.strategies.federated.attacks import byzantine_clients, poison

_WORKERS: dict[str, WorkerState] = {}


class SimulatedFault(RuntimeError):
    """A crash or dropout injected by ``paradigm.faults`` (not a bug)."""


def client_seed(seed: int, rnd: int, cid: int, salt: int = 0) -> int:
    return (seed * 1_000_003 + rnd * 10_007 + cid * 101 + salt) % (2**31 - 1)


@dataclass
class WorkerState:
    """What one Ray worker keeps between client messages of one run."""

    config: Any
    data: Any
    parts: Sequence[np.ndarray]  # a list, or a lazy SampledPartition (indexed by client id)
    byzantine: set[int]
    model: Any
    task: Any
    device: Any
    threads: int
    node: str = ""


def client_partitions(config, labels) -> Sequence[np.ndarray]:
    """Every client's indices: a list, or for ``sampled`` a lazy sequence indexed by client id.

    ``labels``: one per training example, the task's ``partition_labels`` (a class label, or a
    mask's dominant class), which label-skewed schemes split by."""
    from paralab.strategies.federated.partition import partition

    cfg = config.paradigm
    part = cfg.partition
    seed = config.seed if part.seed is None else part.seed
    return partition(
        np.asarray(labels),
        cfg.num_clients,
        part.scheme,
        seed=seed,
        alpha=part.alpha,
        shards_per_client=part.shards_per_client,
        samples_per_client=part.samples_per_client,
    )


def worker_state(run_key: str, plain: dict, data: Any = None) -> WorkerState:
    """Build (once per worker and run) the cached config, data, partitions and model.

    ``data``: the run's dataset as the server loaded it (the engine passes it through Ray's
    object store, so every worker of a node reads one shared copy); None: load it here."""
    state = _WORKERS.get(run_key)
    if state is not None:
        return state
    import torch

    from paralab.platform.config import validate
    from paralab.platform.quiet import quiet
    from paralab.platform.runner import build_model, build_task, load_data

    quiet()
    _WORKERS.clear()  # one run per worker at a time: free the previous run's data
    config = validate(plain)
    res = config.paradigm.client_resources
    threads = max(1, int(res.num_cpus))
    torch.set_num_threads(threads)
    data = load_data(config) if data is None else data
    device = torch.device("cuda" if res.num_gpus > 0 and torch.cuda.is_available() else "cpu")
    from paralab.platform.models import InputSpec

    spec = InputSpec(data.in_channels, data.image_size, data.num_classes)
    task = build_task(config, data)
    # the server's weights (model.init_from's backbone among them) arrive every round
    model = build_model(config, spec, task=task, initialize=False).to(device)
    cfg = config.paradigm
    state = WorkerState(
        config=config,
        data=data,
        parts=client_partitions(config, task.partition_labels(data.train.targets)),
        byzantine=byzantine_clients(cfg.num_clients, cfg.byzantine.fraction, config.seed),
        model=model,
        task=task,
        device=device,
        threads=threads,
    )
    state.node = _ray_node()
    _WORKERS[run_key] = state
    return state


def _ray_node() -> str:
    """The Ray node this worker runs on (reported with each reply: placement on a cluster)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # outside Ray (the overhead benchmark's plain loop)
        return ""


def load_arrays(model, arrays) -> None:
    """Copy a Flower ArrayRecord into the model in place (no new modules, no new tensors kept)."""
    import torch

    with torch.no_grad():
        for key, value in model.state_dict().items():
            value.copy_(torch.from_numpy(arrays[key].numpy()))


def train_client(
    state: WorkerState,
    cid: int,
    rnd: int,
    arrays,
    round_cfg: dict,
    dataset: Any = None,
    index: Any = None,
    hooks: Any = None,
) -> dict:
    """One client's round of local training; returns the new weights and metrics.

    ``dataset`` and ``index`` (default: the training split and the client's partition) say
    which images it trains on; ``hooks`` (a continual method, see
    :mod:`paralab.strategies.federated_continual.methods`) may ``begin()`` once the global
    weights are loaded, ``extend(batch)`` each batch, add ``penalty(model, inputs, outputs)``
    to each loss, and ``end(index)`` after training."""
    import torch

    from paralab.platform.tasks.base import detached, to_device
    from paralab.platform.tasks.optim import build_optimizer

    config, cfg = state.config, state.config.paradigm
    faults = cfg.faults
    rng = np.random.default_rng(client_seed(config.seed, rnd, cid, salt=1))
    dropout, crash, straggle = rng.random(3)
    if dropout < faults.dropout_fraction:
        raise SimulatedFault(f"client {cid} dropped out of round {rnd} (simulated)")
    started = time.perf_counter()
    if straggle < faults.straggler_fraction:
        time.sleep(faults.straggler_delay_s)
    model, task = state.model, state.task
    load_arrays(model, arrays)
    if hooks is not None:
        hooks.begin()
    byzantine = cid in state.byzantine
    mu = float(round_cfg.get("proximal-mu", 0.0))
    keep_global = mu > 0 or (byzantine and cfg.byzantine.attack != "label_flip")
    global_params = [p.detach().clone() for p in model.parameters()] if keep_global else None
    optimizer = build_optimizer(model.parameters(), config.optim)
    dataset = state.data.train if dataset is None else dataset
    index = torch.as_tensor(state.parts[cid] if index is None else index)
    batch = cfg.batch_size or config.data.batch_size
    gen = torch.Generator().manual_seed(client_seed(config.seed, rnd, cid, salt=2))
    torch.manual_seed(client_seed(config.seed, rnd, cid, salt=3))
    flip = byzantine and cfg.byzantine.attack == "label_flip"
    metrics = task.metrics().to(state.device)
    model.train()
    total_loss, seen = torch.zeros((), dtype=torch.float64, device=state.device), 0
    for _ in range(cfg.local_epochs):
        order = index[torch.randperm(len(index), generator=gen)]
        # a trailing batch of one example is dropped: batch norm cannot train on one
        end = len(order) - 1 if len(order) % batch == 1 and len(order) > 1 else len(order)
        for start in range(0, end, batch):
            fetched = task.fetch(dataset, order[start : start + batch])
            if hooks is not None:
                fetched = hooks.extend(fetched)
            x, y = task.unpack(to_device(fetched, state.device))
            if flip:
                y = task.flip_labels(y)
            outputs = task.forward(model, x)
            loss = task.loss(outputs, y)
            if global_params is not None and mu > 0:
                prox = sum(
                    (p - g).pow(2).sum()
                    for p, g in zip(model.parameters(), global_params, strict=True)
                )
                loss = loss + 0.5 * mu * prox
            if hooks is not None:
                loss = loss + hooks.penalty(model, x, outputs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = task.count(y)
            total_loss += loss.detach().double() * n
            metrics.update(detached(outputs), y)
            seen += n
    if hooks is not None:
        hooks.end(index)
    if byzantine and not flip:
        poison(model, global_params, cfg.byzantine, client_seed(config.seed, rnd, cid, salt=4))
    if crash < faults.crash_fraction:
        raise SimulatedFault(f"client {cid} crashed in round {rnd} after training (simulated)")
    scores = task.summarize(metrics.compute()) if seen else {}
    reported = {
        "num-examples": len(index),
        "train_loss": float(total_loss) / max(1, seen),
        "compute_s": time.perf_counter() - started,
    }
    if task.train_score in scores:  # a detector scores nothing while it trains (no detections)
        reported[f"train_{task.train_score}"] = _finite(scores[task.train_score])
    return {"state": model.state_dict(), "metrics": reported}


def evaluate_client(state: WorkerState, cid: int, arrays) -> dict:
    """The global model on this client's own images (federated evaluation): the task's loss
    and headline, as ``eval_loss`` and ``eval_<headline>``."""
    import torch

    from paralab.platform.tasks.evaluate import evaluate

    load_arrays(state.model, arrays)
    index = torch.from_numpy(state.parts[cid])
    size = state.config.data.eval_batch_size
    train = state.data.train
    task = state.task
    batches = (task.fetch(train, index[i : i + size]) for i in range(0, len(index), size))
    values = evaluate(state.task, state.model, batches, state.device)
    headline = state.task.headline
    return {
        "num-examples": len(index),
        "eval_loss": values.get("loss", 0.0),
        f"eval_{headline}": _finite(values.get(headline, 0.0)),
    }


def _finite(value: float) -> float:
    """0 for a NaN score (a client whose images show no class to score): Flower averages it."""
    return value if value == value else 0.0


def make_client_app(plain: dict, run_key: str):
    """A ClientApp whose functions carry only the plain config (a few KB per message)."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context) -> Message:
        state = worker_state(run_key, plain)
        cid = int(context.node_config["partition-id"])
        round_cfg = dict(msg.content["config"])
        out = train_client(
            state, cid, int(round_cfg["server-round"]), msg.content["arrays"], round_cfg
        )
        content = RecordDict(
            {
                "arrays": ArrayRecord(out["state"]),
                "metrics": MetricRecord(out["metrics"]),
                "client": ConfigRecord({"cid": cid, "node": state.node}),
            }
        )
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context) -> Message:
        state = worker_state(run_key, plain)
        cid = int(context.node_config["partition-id"])
        metrics = evaluate_client(state, cid, msg.content["arrays"])
        content = RecordDict(
            {
                "metrics": MetricRecord(metrics),
                "client": ConfigRecord({"cid": cid, "node": state.node}),
            }
        )
        return Message(content=content, reply_to=msg)

    return app
