"""``paradigm.iterations``: an experience trains for exactly that many optimizer steps, however
many batches it holds, and the next experience gets its own budget."""

from __future__ import annotations

import torch

from paralab.platform.config import load
from paralab.platform.models import InputSpec
from paralab.platform.runner import build_model, build_task, load_data
from paralab.platform.tasks.optim import build_optimizer
from paralab.strategies.continual import engine
from paralab.strategies.continual.scenarios import stream_for

QUICK = ["tracking.wandb=disabled", "trainer.num_threads=1", "trainer.progress_bar=false"]


def trained_steps(iterations: int) -> tuple[list[int], list[int], list[int]]:
    """Steps, epochs and images per experience of a 2-experience digits stream (batch 32)."""
    config = load("quickstart_continual", [*QUICK, "paradigm.n_experiences=2",
                                           f"paradigm.iterations={iterations}"])  # fmt: skip
    data = load_data(config)
    task = build_task(config, data)
    stream = stream_for(config.paradigm, data, task)
    model = build_model(config, InputSpec(data.in_channels, data.image_size, data.num_classes))
    strategy = engine.build_strategy(
        config.paradigm, model, build_optimizer(model.parameters(), config.optim), task=task,
        optim_cfg=config.optim, stream=stream, device=torch.device("cpu"), epochs=1,
        batch_size=32, eval_batch_size=256, seed=0,
    )  # fmt: skip
    benchmark = engine.to_benchmark(stream, task)
    watch = next(p for p in strategy.plugins if isinstance(p, engine.LossWatch))
    steps, epochs = [], []
    for experience in benchmark.train_stream:
        engine.train(strategy, experience)
        steps.append(watch.count)
        epochs.append(strategy.train_epochs)
    return steps, epochs, [len(e.train) for e in stream]


def test_a_budget_below_one_epoch_stops_mid_epoch_and_the_next_experience_trains():
    steps, epochs, _ = trained_steps(7)
    assert steps == [7, 7] and epochs == [1, 1]


def test_a_budget_over_several_epochs_runs_as_many_epochs_as_it_needs():
    steps, epochs, images = trained_steps(50)
    assert steps == [50, 50]
    for n, e in zip(images, epochs, strict=True):  # 21-23 batches an epoch
        assert e == -(-50 // -(-n // 32)) and e > 1


def test_epochs_and_iterations_together_are_refused_before_a_folder_exists(refuses):
    overrides = [*QUICK, "paradigm.epochs=2", "paradigm.iterations=10"]
    refuses("quickstart_continual", overrides, "a budget per experience is one or the other")
