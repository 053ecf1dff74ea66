"""The server's round loop: a Flower strategy's configure/aggregate steps, measured per round.

``Strategy.start`` runs all rounds in one call. The loop here makes the same calls in the same
order (configure_train, send_and_receive, aggregate_train, configure_evaluate, ...), and adds what
the platform needs between them: the round's metrics (clients succeeded/failed, bytes each way,
wall time, the task's centralized test metrics) to the tracker, a checkpoint of the global model
and the strategy's state after every round, resuming at a given round, seeded client sampling, a
deadline, and stopping when no client succeeds. It talks to the clients through the engine's
grid (:class:`.grid.RayGrid`), in the run's own thread.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from paralab.errors import RunFailedError
from paralab.platform.divergence import check_finite
from paralab.platform.progress import say
from paralab.strategies.federated.client import client_seed

if TYPE_CHECKING:
    from paralab.strategies.federated.grid import RayGrid


class FederatedRunError(RunFailedError):
    """A federated run that cannot go on: every client failed, or the run hit its timeout."""


@dataclass
class LoopState:
    """What a checkpoint holds besides the model and the strategy state."""

    round: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    failed_streak: int = 0
    succeeded_total: int = 0
    failed_total: int = 0
    bytes_up: float = 0.0
    bytes_down: float = 0.0
    startup_s: float = 0.0


def short_reason(reason: str) -> str:
    text = reason.replace("\\n", "\n").strip().splitlines()
    lines = [t.strip(" <>'") for t in text if t.strip(" <>'")]
    return lines[-1][:300] if lines else "unknown error"


class ServerLoop:
    """A Flower strategy's rounds on the engine's grid, in the run's thread (it logs to the run)."""

    def __init__(self, ctx, strategy, arrays, state: LoopState, evaluate, save, abort) -> None:
        self.ctx, self.cfg, self.abort = ctx, ctx.config.paradigm, abort
        self.strategy, self.arrays, self.state = strategy, arrays, state
        self.evaluate, self.save = evaluate, save
        self.deadline = time.monotonic() + self.cfg.timeout_s
        self.created = time.perf_counter()
        self.first_error: str | None = None
        self.stopped_at: str = ""
        self.round = 0  # the round in progress (the hooks read it)

    def _send(self, grid: RayGrid, messages: list, phase: str, rnd: int) -> tuple[list, list]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self._timeout(rnd, phase)
        timeout = min(self.cfg.round_timeout_s, left)
        replies = grid.send_and_receive(messages, timeout=timeout, abort=self.abort)
        if self.abort.is_set():
            raise FederatedRunError(f"federated run aborted in round {rnd}: {self.stopped_at}")
        if time.monotonic() >= self.deadline and len(replies) < len(messages):
            self._timeout(rnd, phase)
        ok = [r for r in replies if not r.has_error()]
        errors = [r for r in replies if r.has_error()]
        for r in errors:
            reason = short_reason(r.error.reason)
            if self.first_error is None and "(simulated)" not in reason:
                self.first_error = reason
        ok.sort(key=lambda r: int(r.content["client"]["cid"]))
        missing = len(messages) - len(replies)
        return ok, errors + [None] * missing

    # hooks for a loop that carries more than the model (see federated_continual.server)
    def round_config(self, rnd: int):
        """The ConfigRecord every sampled client gets with the round's weights."""
        from flwr.app import ConfigRecord

        return ConfigRecord()

    def before_send(self, messages: list, grid: RayGrid) -> dict[str, float]:
        """Change the round's training messages before they go; metrics to log."""
        return {}

    def after_receive(self, replies: list) -> dict[str, float]:
        """Read (and strip) the succeeded replies before aggregation; metrics to log."""
        return {}

    def after_aggregate(self, rnd: int, arrays):
        """The global weights the round ends with, given the strategy's aggregate."""
        return arrays

    def _aggregate(self, rnd: int, ok: list, sampled: int):
        """The strategy's aggregation; a robust rule that needs more replies than the failures
        left (Bulyan: 4f+3) keeps the global model for this round instead of ending the run."""
        try:
            return self.strategy.aggregate_train(rnd, ok)
        except (ValueError, AssertionError) as error:
            if len(ok) >= sampled:
                raise
            say(
                f"round {rnd}: {self.cfg.strategy} cannot aggregate {len(ok)} of {sampled} "
                f"updates ({error}); the global model is kept"
            )
            return None, None

    def _timeout(self, rnd: int, phase: str) -> None:
        raise FederatedRunError(
            f"federated run stopped by its timeout: paradigm.timeout_s={self.cfg.timeout_s:g} s "
            f"passed in round {rnd} ({phase}) with clients still busy. A client hangs, or the "
            "run needs longer: raise paradigm.timeout_s"
        )

    def run(self, grid: RayGrid) -> None:
        from flwr.app import ConfigRecord

        seed = self.ctx.config.seed
        start = self.state.round + 1
        if start == 1 and self.cfg.centralized_eval:
            self.ctx.tracker.log_metrics(self.evaluate(self.arrays, full=False), step=0)
        for rnd in range(start, self.cfg.rounds + 1):
            if self._reached_target():
                break
            t0 = time.perf_counter()
            self.round = rnd
            if rnd == start:  # Ray, the engine and the server's set-up, before any client work
                self.state.startup_s = t0 - self.created
            random.seed(client_seed(seed, rnd, 0, salt=5))
            msgs = list(
                self.strategy.configure_train(rnd, self.arrays, self.round_config(rnd), grid)
            )
            down = self.arrays.count_bytes() * len(msgs)
            extra = self.before_send(msgs, grid)
            ok, failed = self._send(grid, msgs, "training", rnd)
            extra |= self.after_receive(ok)
            up = sum(r.content["arrays"].count_bytes() for r in ok)
            nodes = {str(r.content["client"].get("node", "")) for r in ok}
            compute = sum(float(r.content["metrics"].get("compute_s", 0.0)) for r in ok)
            new_arrays, train_metrics = self._aggregate(rnd, ok, len(msgs))
            if new_arrays is not None:
                self.arrays = self.after_aggregate(rnd, new_arrays)
            train_s = time.perf_counter() - t0
            metrics: dict[str, float] = {
                "clients/sampled": len(msgs),
                "clients/succeeded": len(ok),
                "clients/failed": len(failed),
                "clients/nodes": len(nodes),
                "time/train_s": train_s,
                "time/client_compute_s": compute,
                **extra,
            }
            metrics.update(
                {
                    f"train/{k.removeprefix('train_')}": float(v)
                    for k, v in (train_metrics or {}).items()
                    if k != "compute_s"
                }
            )
            if self.cfg.fraction_evaluate > 0:
                random.seed(client_seed(seed, rnd, 0, salt=6))
                emsgs = list(
                    self.strategy.configure_evaluate(rnd, self.arrays, ConfigRecord(), grid)
                )
                down += self.arrays.count_bytes() * len(emsgs)
                eok, _ = self._send(grid, emsgs, "evaluation", rnd)
                agg = self.strategy.aggregate_evaluate(rnd, eok) or {}
                metrics.update({f"fed/{k}": float(v) for k, v in agg.items()})
            if self.cfg.centralized_eval:
                metrics.update(self.evaluate(self.arrays, full=rnd == self.cfg.rounds))
            metrics.update(
                {
                    "bytes/down": float(down),
                    "bytes/up": float(up),
                    "time/round_s": time.perf_counter() - t0,
                }
            )
            self._end_round(rnd, metrics, len(ok), len(failed))

    def _reached_target(self) -> bool:
        """``stop_at_target``: the last round's headline reached ``target`` (rounds-to-accuracy
        experiments stop there; a resumed run that had reached it trains no further)."""
        if not self.cfg.stop_at_target or not self.state.history:
            return False
        score = self.state.history[-1].get(f"test/{self.ctx.task.headline}")
        if score is None or score < self.cfg.target:
            return False
        say(f"round {self.state.round}: test/{self.ctx.task.headline}={score:.4f} reached "
            f"paradigm.target={self.cfg.target:g}; stopping (paradigm.stop_at_target)")  # fmt: skip
        return True

    def _end_round(self, rnd: int, metrics: dict[str, float], ok: int, failed: int) -> None:
        s = self.state
        s.round, s.succeeded_total, s.failed_total = (
            rnd,
            s.succeeded_total + ok,
            s.failed_total + failed,
        )
        s.bytes_up += metrics["bytes/up"]
        s.bytes_down += metrics["bytes/down"]
        s.failed_streak = 0 if ok else s.failed_streak + 1
        s.history.append({k: v for k, v in metrics.items() if k.startswith(("test/", "time/"))})
        self.ctx.tracker.log_metrics(metrics, step=rnd)
        # a NaN/inf loss ends the run (status failed) before its weights replace the checkpoint
        check_finite(metrics, where=f"round {rnd}")
        self.save(self.arrays, self.strategy, s)
        headline = f"test/{self.ctx.task.headline}"
        shown = "  ".join(f"{k}={metrics[k]:.4f}" for k in (headline, "test/loss") if k in metrics)
        say(
            f"round {rnd}/{self.cfg.rounds}  {shown}  clients ok={ok} failed={failed}  "
            f"{metrics['time/round_s']:.2f}s",
        )
        no_success = s.succeeded_total == 0 and rnd == self.cfg.rounds
        if s.failed_streak >= self.cfg.abort_after_failed_rounds or no_success:
            why = f" First client error: {self.first_error}" if self.first_error else ""
            raise FederatedRunError(
                f"every client failed in {s.failed_streak} round(s) in a row (round {rnd}); "
                f"the federated run cannot go on.{why} Check paradigm.faults, "
                "paradigm.client_resources and the client errors above"
            )


def final_metrics(state: LoopState, target: float, headline: str = "test/acc") -> dict[str, float]:
    """The run's summary metrics: the last round's, the best ``headline`` (``test/best_<name>``)
    and the first round that reached ``target`` (``rounds_to_<target>``)."""
    history = state.history
    last = history[-1] if history else {}
    out = {k: v for k, v in last.items() if k.startswith("test/")}
    scores = [h.get(headline) for h in history]
    if any(a is not None for a in scores):
        stage, _, name = headline.partition("/")
        out[f"{stage}/best_{name}"] = max(a for a in scores if a is not None)
        reached = [i + 1 for i, a in enumerate(scores) if a is not None and a >= target]
        if reached:
            out[f"rounds_to_{target:g}"] = out["rounds_to_target"] = float(reached[0])
    warm = [h["time/round_s"] for h in history[1:] if "time/round_s" in h]
    if warm:
        out["time/round_mean_s"] = sum(warm) / len(warm)
    if history and "time/round_s" in history[0]:
        out["time/first_round_s"] = history[0]["time/round_s"]
    out["time/startup_s"] = state.startup_s
    out.update(
        {
            "rounds": float(state.round),
            "clients/succeeded_total": float(state.succeeded_total),
            "clients/failed_total": float(state.failed_total),
            "bytes/up_total": state.bytes_up,
            "bytes/down_total": state.bytes_down,
        }
    )
    return out
