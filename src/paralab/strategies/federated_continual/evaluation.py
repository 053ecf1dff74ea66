"""Scoring in a federated continual run: the global model every round, clients' own models at
the end of each phase (``client_eval``), and what the scores say about forgetting.

The global model is scored on every experience's whole test split each round (``test/exp<j>``,
their mean as the task's headline): the accuracy-matrix rows are those scores after each
phase's last round. With ``paradigm.client_eval=true`` the server also scores, at each phase's
end, every client's model as it came back from local training (before aggregation) on the
experiences that client has trained so far: one row per client and phase
(``client_matrices.json``), from which each client's forgetting (the best score it ever had on
an experience, minus its last, averaged over the experiences before its last one;
``clients/forgetting_mean|max``). It costs one evaluation of the seen test splits per client
and phase, on the server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Scorer = Callable[[Any, Sequence[int]], dict[int, tuple[float, float]]]


def experience_scorer(ctx: Any, model: Any, schedule: Any) -> Scorer:
    """``score(arrays, experiences)``: (the task's score, the loss) per listed experience of
    the weights ``arrays`` on its whole test split."""
    import torch

    from paralab.platform.tasks.evaluate import evaluate
    from paralab.strategies.federated.client import load_arrays

    task, size = ctx.task, ctx.config.data.eval_batch_size

    def score(arrays: Any, experiences: Sequence[int]) -> dict[int, tuple[float, float]]:
        load_arrays(model, arrays)
        out = {}
        for j in experiences:
            exp = schedule.experiences[j]
            index = torch.arange(len(exp.test))
            batches = (
                task.fetch(exp.test, index[i : i + size]) for i in range(0, len(index), size)
            )
            values = evaluate(task, model, batches)
            out[j] = (task.score(values, exp.score_classes), values.get("loss", 0.0))
        return out

    return score


def round_evaluator(score: Scorer, n_experiences: int, headline: str):
    """The server's evaluation of the global weights each round (module docstring)."""

    def run(arrays: Any, full: bool = True) -> dict[str, float]:
        scored = score(arrays, range(n_experiences))
        out = {f"test/exp{j}": s for j, (s, _) in scored.items()}
        out[f"test/{headline}"] = sum(s for s, _ in scored.values()) / n_experiences
        out["test/loss"] = sum(loss for _, loss in scored.values()) / n_experiences
        return out

    return run


def client_forgetting(rows: Sequence[dict[str, float]]) -> float | None:
    """One client's forgetting from its rows (experience -> score, one per phase it ended):
    over the experiences of its earlier rows, best earlier score minus last; None without
    two rows."""
    if len(rows) < 2:
        return None
    last, earlier = rows[-1], rows[:-1]
    seen = {e for row in earlier for e in row}
    drops = [max(row[e] for row in earlier if e in row) - last.get(e, 0.0) for e in seen]
    return sum(drops) / len(drops) if drops else None


def forgetting_summary(matrices: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    values = [f for f in (client_forgetting(rows) for rows in matrices.values()) if f is not None]
    if not values:
        return {}
    return {
        "clients/forgetting_mean": sum(values) / len(values),
        "clients/forgetting_max": max(values),
    }
