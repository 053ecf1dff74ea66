"""``paradigm=untrained``: the model as initialised, judged like a trained one.

Why: a comparison needs its floor. Self-supervised transfer is read against a randomly
initialised backbone (a random conv net's features already give a k-NN or linear probe well
above chance), and a task's metrics against what an untrained model scores. This paradigm trains
nothing: it tests the freshly built model (``model.init_from`` included, so it also judges a
loaded backbone as it is) with the task's metrics, saves it as ``checkpoints/last.pt`` (the
federated format, ``{"model": state_dict}``) so ``probe.enabled`` and ``paralab probe`` read it
like any run's, and draws its predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

from paralab.platform.paradigm import Paradigm, ParadigmConfig, register_paradigm
from paralab.platform.runner import RunContext


@dataclass
class UntrainedConfig(ParadigmConfig):
    name: str = "untrained"


@register_paradigm("untrained", config=UntrainedConfig)
class Untrained(Paradigm):
    """Test the model as built (random weights, or ``model.init_from``); train nothing."""

    step_budget = "it trains nothing"

    def run(self, ctx: RunContext) -> dict[str, float]:
        import torch

        from paralab.platform.data import make_loader
        from paralab.platform.devices import one_device
        from paralab.platform.tasks.evaluate import evaluate, prefixed

        model, task, config = ctx.build_model(), ctx.task, ctx.config
        device = one_device(config.trainer)
        model.to(device)
        batches = make_loader(
            ctx.data.test, config.data.eval_batch_size, shuffle=False, collate=task.collate
        )
        metrics = prefixed(evaluate(task, model, batches, device), "test")
        if config.tracking.checkpoints:
            folder = ctx.tracker.checkpoint_dir
            folder.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict()}, folder / "last.pt")
        ctx.tracker.log_metrics(metrics, step=0)
        ctx.draw_predictions(model, device)
        return metrics
