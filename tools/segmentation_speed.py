"""Training images per second of the segmentation suite's models, measured side by side.

The models of ``paralab bench segmentation`` (the ``canvas_unet``, ``canvas_fcn`` and
``canvas_segmenter`` experiments, as configured), one training step at a time (forward, the
task's loss, backward, optimizer step) on batches of the canvas data, in rounds that visit the
models in turn so that background load touches all of them alike. Prints the median images per
second of each model and the spread over the rounds::

    python -m tools.segmentation_speed --rounds 3 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

EXPERIMENTS = {"unet": "canvas_unet", "fcn": "canvas_fcn", "segmenter": "canvas_segmenter"}


def build(experiment: str, overrides: list[str]):
    """The experiment's model, task, optimizer and a fixed training batch."""
    from paralab.platform.config import load
    from paralab.platform.models import InputSpec
    from paralab.platform.runner import build_model, build_task, load_data
    from paralab.platform.tasks.optim import build_optimizer

    config = load(experiment, ["tracking.wandb=disabled", "data.train_images=256", *overrides])
    data = load_data(config)
    task = build_task(config, data)
    spec = InputSpec(data.in_channels, data.image_size, data.num_classes)
    model = build_model(config, spec, task=task).train()
    optimizer = build_optimizer(model.parameters(), config.optim)
    batch = task.fetch(data.train, list(range(config.data.batch_size)))
    return model, task, optimizer, batch


def images_per_second(model, task, optimizer, batch, steps: int) -> float:
    x, y = task.unpack(batch)
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        task.loss(task.forward(model, x), y).backward()
        optimizer.step()
    return steps * len(x) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="training steps per model a round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="key=value for every model's experiment")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = {name: build(exp, args.overrides) for name, exp in EXPERIMENTS.items()}
    for parts in runs.values():
        images_per_second(*parts, steps=2)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, parts in runs.items():
            rates[name].append(images_per_second(*parts, steps=args.steps))
    for name, values in rates.items():
        params = sum(p.numel() for p in runs[name][0].parameters())
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:<10} {statistics.median(values):6.0f} images/s (rounds: {shown}), "
              f"{params:,} parameters")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
