"""``paradigm=federated_continual``: a federation whose data arrives as a stream of experiences.

The run is the federated one (Flower strategy, clients on Ray workers, faults, Byzantine
clients, per-round checkpoints and ``--resume``) with three changes:

- what a client holds changes with the phase (:mod:`.schedule`): in phase p it trains on its
  share of one experience only, the same for all clients (``schedule=sync``) or its own
  (``async``);
- each client runs a continual-learning method locally (:mod:`.methods`: naive, replay, EWC,
  LwF), whose state the server keeps between the rounds the client takes part in
  (:mod:`.server`);
- the server may help against forgetting (``server_method=prototypes``, :mod:`.prototypes`).

The global model is tested after every round on every experience's test images
(``test/exp<j>``, their mean as the task's headline); after each phase's last round those
scores are a row of the accuracy matrix (``accuracy_matrix.json``/``.png``), from which come
``test/<headline>_avg``, ``forgetting`` and ``bwt`` as in a continual run. With ``async`` the
matrix is the global model's, whose rows follow phases, not one client's task order.
"""

from __future__ import annotations

import json
import threading
import time

from paralab.errors import ConfigError
from paralab.platform.paradigm import register_paradigm
from paralab.platform.runner import RunContext
from paralab.strategies.federated.config import check_config
from paralab.strategies.federated.paradigm import Federated, _saver, aggregated
from paralab.strategies.federated_continual.config import FederatedContinualConfig


@register_paradigm("federated_continual", config=FederatedContinualConfig)
class FederatedContinual(Federated):
    """Federated learning over a stream of experiences, a continual method in every client."""

    cfg: FederatedContinualConfig

    @property
    def strategy(self) -> str:
        extra = [] if self.cfg.server_method == "none" else [self.cfg.server_method]
        return "+".join([self.cfg.strategy, self.cfg.method, *extra])

    def check(self, config, data) -> None:
        from paralab.platform.runner import build_task
        from paralab.strategies.continual.paradigm import check_scenario

        cfg = self.cfg
        task = build_task(config, data)
        expected = cfg.rounds_per_task * cfg.n_experiences
        if cfg.rounds != expected:
            raise ConfigError(
                f"paradigm.rounds={cfg.rounds}: a federated continual run has rounds_per_task x "
                f"n_experiences = {cfg.rounds_per_task} x {cfg.n_experiences} = {expected} "
                "rounds. Set paradigm.rounds=null (or to that), or change "
                "paradigm.rounds_per_task"
            )
        if cfg.stop_at_target:
            raise ConfigError(
                "paradigm.stop_at_target=true: a federated continual run trains every phase "
                "(rounds_per_task x n_experiences rounds). Set paradigm.stop_at_target=false"
            )
        if cfg.eval_subset is not None:
            raise ConfigError(
                "paradigm.eval_subset: every round tests the global model on every "
                "experience's whole test split (the accuracy matrix needs them). Set "
                "paradigm.eval_subset=null"
            )
        if cfg.fraction_evaluate > 0:
            raise ConfigError(
                f"paradigm.fraction_evaluate={cfg.fraction_evaluate}: federated evaluation on "
                "clients' own images has no meaning while their images change with the phase; "
                "the server tests the global model on every experience. Set "
                "paradigm.fraction_evaluate=0"
            )
        if not cfg.centralized_eval:
            raise ConfigError(
                "paradigm.centralized_eval=false: the accuracy matrix is the server's test of "
                "the global model. Set paradigm.centralized_eval=true"
            )
        check_scenario(cfg, len(task.incremental_classes()), task)
        if cfg.method == "lwf" and task.name != "classification":
            raise ConfigError(
                f"paradigm.method=lwf distils class logits, and task={task.name} has none. "
                "Choose paradigm.method=naive, replay or ewc"
            )
        if cfg.server_method == "prototypes":
            from paralab.strategies.federated_continual.prototypes import check_prototypes

            check_prototypes(cfg, config, data, task)
        from paralab.strategies.continual.scenarios import stream_for

        # each experience is split among all clients
        smallest = min(len(e.train) for e in stream_for(cfg, data, task))
        super().check(config, data)  # the federated rules (strategy, Ray, attacks)
        check_config(cfg, smallest, data.num_classes)

    def run(self, ctx: RunContext) -> dict[str, float]:
        from paralab.strategies.continual.metrics import (
            continual_metrics,
            plot_matrix,
            write_matrix_json,
        )
        from paralab.strategies.federated.server import final_metrics
        from paralab.strategies.federated.simulation import federated_session, serve
        from paralab.strategies.federated_continual.client import make_continual_client_app
        from paralab.strategies.federated_continual.evaluation import forgetting_summary

        cfg = self.cfg
        run_key = f"{ctx.run_dir}:{time.time_ns()}"
        client_app = make_continual_client_app(ctx.config.plain, run_key)
        # the workers build their state from here on, while this process builds the server's
        with federated_session(cfg, ctx.config.plain, ctx.data, client_app, run_key) as engine:
            loop, model, labels = self._server(ctx)
            serve(engine, loop, cfg, loop.abort)
        headline = ctx.task.headline
        matrix = loop.state.matrix
        write_matrix_json(ctx.run_dir / "accuracy_matrix.json", matrix, labels, headline)
        title = f"{self.strategy} ({cfg.schedule}, {cfg.scenario}-incremental): test/{headline}"
        plot_matrix(ctx.run_dir / "accuracy_matrix.png", matrix, labels, title)
        metrics = final_metrics(loop.state, cfg.target, f"test/{headline}")
        metrics |= continual_metrics(matrix, headline) if matrix else {}
        metrics |= _memory(loop.state) | aggregated(model)
        if cfg.client_eval:
            rows = loop.state.client_rows
            (ctx.run_dir / "client_matrices.json").write_text(json.dumps(rows, indent=1))
            metrics |= forgetting_summary(rows)
        return metrics

    def _server(self, ctx: RunContext):
        """The server side: the schedule (``schedule.json``), the global model, strategy, client
        store and server step (from the last checkpoint on resume), and the round loop."""
        import torch
        from flwr.app import ArrayRecord

        from paralab.strategies.federated.strategies import build_strategy, load_strategy_state
        from paralab.strategies.federated_continual import server as S
        from paralab.strategies.federated_continual.evaluation import (
            experience_scorer,
            round_evaluator,
        )
        from paralab.strategies.federated_continual.schedule import (
            build_schedule,
            experience_labels,
        )

        cfg, task = self.cfg, ctx.task
        schedule = build_schedule(ctx.config, ctx.data, task)
        labels = experience_labels(schedule, cfg.scenario)
        _write_schedule(ctx, schedule, labels)
        model = ctx.build_model().eval()
        strategy, state, store = build_strategy(cfg), S.ContinualLoopState(), {}
        server_step = _server_step(cfg, ctx, model, schedule)
        saved = ctx.last_checkpoint("last.pt")
        if saved:
            ckpt = torch.load(saved, map_location="cpu", weights_only=True)
            model.load_state_dict(ckpt["model"])
            load_strategy_state(strategy, ckpt["strategy"])
            state = S.ContinualLoopState(**ckpt["loop"])
            store = S.decode_store(ckpt["clients"])
            if server_step is not None:
                server_step.load(ckpt.get("server", {}))
        score = experience_scorer(ctx, model, schedule)
        loop = S.ContinualServerLoop(
            ctx, strategy, ArrayRecord(model.state_dict()), state,
            round_evaluator(score, len(schedule.experiences), task.headline),
            _saver(ctx, model, extra=lambda: {
                "clients": S.encode_store(store),
                "server": server_step.state() if server_step is not None else {},
            }),
            threading.Event(), schedule=schedule, store=store, server_step=server_step,
            client_scorer=score if cfg.client_eval else None,
        )  # fmt: skip
        return loop, model, labels


def _server_step(cfg, ctx, model, schedule):
    if cfg.server_method != "prototypes":
        return None
    from paralab.strategies.federated_continual.prototypes import PrototypeStep

    return PrototypeStep(cfg, model, ctx.config.seed)


def _memory(state) -> dict[str, float]:
    sizes = list(state.state_bytes.values())
    if not sizes:
        return {}
    return {
        "memory/client_state_bytes_mean": sum(sizes) / len(sizes),
        "memory/client_state_bytes_max": max(sizes),
        "memory/client_state_bytes_total": sum(sizes),
    }


def _write_schedule(ctx: RunContext, schedule, labels: list[str]) -> None:
    """``schedule.json``: each client's experience per phase and its images in each."""
    payload = {
        "experiences": labels,
        "rounds_per_task": schedule.rounds_per_task,
        "clients": [
            {
                "cid": cid,
                "order": order,
                "images": [len(schedule.parts[e][cid]) for e in range(len(labels))],
            }
            for cid, order in enumerate(schedule.orders)
        ],
    }
    (ctx.run_dir / "schedule.json").write_text(json.dumps(payload, indent=1))
