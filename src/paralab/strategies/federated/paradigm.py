"""``paradigm=federated``: a Flower strategy's rounds in this process, Flower ClientApps on Ray.

The run: partitions and their class histograms (``client_histograms.png``), a Flower strategy by
name, the round loop in this process (centralized test metrics of the run's task, checkpoints,
one line per round) and the ClientApps in Ray actors of the engine (:mod:`.engine`; see
:mod:`.client` for what a worker caches), which start building their state as the run starts.
``--resume`` reloads the global model and the strategy state from ``checkpoints/last.pt``.
Callbacks given to ``paralab.run(..., callbacks=[...])`` that define
``on_round_end(round, metrics)`` are called after every round's checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from paralab.platform.paradigm import Paradigm, register_paradigm
from paralab.platform.runner import RunContext
from paralab.strategies.federated.config import FederatedConfig, check_config

CHECKPOINT = "last.pt"
logger = logging.getLogger(__name__)


@register_paradigm("federated", config=FederatedConfig)
class Federated(Paradigm):
    """Federated learning: clients train on their partitions, a Flower strategy aggregates."""

    step_budget = "clients train paradigm.local_epochs per round, for paradigm.rounds rounds"

    @property
    def strategy(self) -> str:
        return self.cfg.strategy

    @classmethod
    @contextlib.contextmanager
    def warm(cls) -> Iterator[None]:
        """Ray and the client workers stay up between the runs inside (see .simulation)."""
        from paralab.strategies.federated.simulation import warm_engine

        with warm_engine():
            yield

    def check(self, config, data) -> None:
        from paralab.errors import ConfigError
        from paralab.platform.tasks import TASKS
        from paralab.strategies.federated.local_ray import check_reachable

        check_config(self.cfg, len(data.train), data.num_classes)
        task = TASKS.get(config.task.name).obj
        byz = self.cfg.byzantine
        if byz.fraction > 0 and byz.attack not in task.attacks:
            raise ConfigError(
                f"paradigm.byzantine.attack={byz.attack} does not apply to task={config.task.name}"
                f": choose one of {', '.join(task.attacks)}"
            )
        check_reachable(self.cfg)  # a dead cluster address fails here, before the run folder

    def run(self, ctx: RunContext) -> dict[str, float]:
        from paralab.strategies.federated.client import make_client_app
        from paralab.strategies.federated.server import final_metrics
        from paralab.strategies.federated.simulation import federated_session, serve

        cfg: FederatedConfig = self.cfg
        run_key = f"{ctx.run_dir}:{time.time_ns()}"
        client_app = make_client_app(ctx.config.plain, run_key)
        # the workers build their state from here on, while this process builds the server's
        with federated_session(cfg, ctx.config.plain, ctx.data, client_app, run_key) as engine:
            loop, model = self._server(ctx)
            serve(engine, loop, cfg, loop.abort)
        ctx.draw_predictions(model)
        headline = f"test/{ctx.task.headline}"
        return final_metrics(loop.state, cfg.target, headline) | aggregated(model)

    def _server(self, ctx: RunContext):
        """The server side: partitions and their histograms, the global model (from the last
        checkpoint on resume), the strategy, and the round loop."""
        import torch
        from flwr.app import ArrayRecord

        from paralab.strategies.federated import partition as P
        from paralab.strategies.federated.client import client_partitions
        from paralab.strategies.federated.server import LoopState, ServerLoop
        from paralab.strategies.federated.strategies import build_strategy, load_strategy_state

        cfg: FederatedConfig = self.cfg
        data, task = ctx.data, ctx.task
        labels = task.partition_labels(data.train.targets)
        parts = client_partitions(ctx.config, labels)
        # sampled: any number of clients, so the first HISTOGRAM_CLIENTS only (said in the files)
        limit = P.HISTOGRAM_CLIENTS if cfg.partition.scheme == "sampled" else None
        counts = P.histograms(labels.numpy(), parts, data.num_classes, limit)
        title = f"{data.name}: {cfg.num_clients} clients, {_scheme(cfg)} (by {task.split_by})"
        P.write_histograms(counts, data.classes, ctx.run_dir, title, total=len(parts))
        model = ctx.build_model().eval()
        strategy, state = build_strategy(cfg), LoopState()
        saved = ctx.last_checkpoint(CHECKPOINT)
        if saved:
            ckpt = torch.load(saved, map_location="cpu", weights_only=True)
            model.load_state_dict(ckpt["model"])
            load_strategy_state(strategy, ckpt["strategy"])
            state = LoopState(**ckpt["loop"])
        else:
            ctx.tracker.log_metrics(P.summarize(counts), step=0)
        arrays = ArrayRecord(model.state_dict())
        abort = threading.Event()
        evaluate, save = _evaluator(ctx, model), _saver(ctx, model)
        return ServerLoop(ctx, strategy, arrays, state, evaluate, save, abort), model


def aggregated(model) -> dict[str, float]:
    """What every strategy aggregates: each tensor of the model's state dict, its parameters and
    its buffers (batch-norm running means, variances and counters) alike, by the strategy's
    rule with the same client weights; counted for the summary, so a report says it."""
    names = {name for name, _ in model.named_parameters()}
    state = model.state_dict()
    buffers = sum(1 for key in state if key not in names)
    logger.info(
        "the strategy aggregates all %d tensors of the model: %d parameters and %d buffers "
        "(batch-norm statistics included)",
        len(state),
        len(state) - buffers,
        buffers,
    )
    return {
        "federated/aggregated_parameters": float(len(state) - buffers),
        "federated/aggregated_buffers": float(buffers),
    }


def _scheme(cfg: FederatedConfig) -> str:
    p = cfg.partition
    extra = {
        "dirichlet": f"(alpha={p.alpha:g})",
        "shards": f"({p.shards_per_client} per client)",
        "sampled": f"({p.samples_per_client} per client)",
    }
    return p.scheme + extra.get(p.scheme, "")


def _evaluator(ctx: RunContext, model):
    """Centralized evaluation of the global weights on the test split, in this process: the
    task's metrics as ``test/<name>``.

    With ``paradigm.eval_subset`` set, rounds before the last use a fixed seeded subset of the
    test split (per-round curves at a fraction of the cost); the last round uses all of it.
    """
    import torch

    from paralab.platform.tasks.evaluate import evaluate, prefixed
    from paralab.strategies.federated.client import load_arrays

    test, batch = ctx.data.test, ctx.config.data.eval_batch_size
    everything = torch.arange(len(test))
    subset = everything
    size = ctx.config.paradigm.eval_subset
    if size is not None and size < len(test):
        gen = torch.Generator().manual_seed(ctx.config.seed)
        subset = torch.randperm(len(test), generator=gen)[:size].sort().values

    def run(arrays, full: bool = True) -> dict[str, float]:
        load_arrays(model, arrays)
        index = everything if full else subset
        task = ctx.task
        batches = (task.fetch(test, index[i : i + batch]) for i in range(0, len(index), batch))
        return prefixed(evaluate(task, model, batches), "test")

    return run


def _saver(ctx: RunContext, model, extra=None):
    """After each round: the global model, the strategy state and the loop state, atomically;
    ``extra()`` adds entries (a federated continual run's client states)."""
    import dataclasses

    import torch

    from paralab.strategies.federated.client import load_arrays
    from paralab.strategies.federated.strategies import strategy_state

    hooks = [c for c in ctx.callbacks if hasattr(c, "on_round_end")]

    def save(arrays, strategy, state) -> None:
        if ctx.config.tracking.checkpoints:
            load_arrays(model, arrays)
            folder = ctx.tracker.checkpoint_dir
            folder.mkdir(parents=True, exist_ok=True)
            payload: dict[str, Any] = {
                "model": {k: v.clone() for k, v in model.state_dict().items()},
                "strategy": strategy_state(strategy),
                "loop": dataclasses.asdict(state),
                **(extra() if extra is not None else {}),
            }
            tmp = folder / (CHECKPOINT + ".tmp")
            torch.save(payload, tmp)
            tmp.replace(folder / CHECKPOINT)
        for hook in hooks:
            hook.on_round_end(state.round, state.history[-1] if state.history else {})

    return save
