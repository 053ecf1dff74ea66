"""The supervised paradigm's epoch time against a plain PyTorch loop, side by side.

Both train the same registry model on the same in-memory data with the same batch size,
optimizer, schedule, sampler and threads; both validate once per epoch. The platform side is a
real run (Lightning Trainer, CSV logging, torchmetrics, checkpoints); the first epoch of each is
warm-up and not counted. Repeats alternate the order of the two so drifting machine load hits
both. Run from the repository root::

    python -m tools.overhead.supervised [--repeats 3] [--epochs 3] [--output FILE] [key=value ...]
"""

from __future__ import annotations

import statistics
import tempfile
import time

import lightning as L
import torch

from paralab.platform.config import ResolvedConfig, load
from paralab.platform.data import make_loader
from paralab.platform.models import InputSpec
from paralab.platform.runner import build_model, execute, load_data, seed_everything
from paralab.platform.tasks.optim import build_optimizer, build_scheduler
from tools.overhead.common import alternating, parser, summarize, write_json


def plain_epoch_times(config: ResolvedConfig, epochs: int) -> list[float]:
    data = load_data(config)
    seed_everything(config.seed)
    model = build_model(config, InputSpec(data.in_channels, data.image_size, data.num_classes))
    train = make_loader(data.train, config.data.batch_size, shuffle=True, seed=config.seed)
    val = make_loader(data.val, config.data.eval_batch_size, shuffle=False)
    optimizer = build_optimizer(model.parameters(), config.optim)
    scheduler = build_scheduler(optimizer, config.optim, epochs, len(train))
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        train.sampler.set_epoch(epoch)
        model.train()
        for x, y in train:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in val)
        assert 0 <= correct <= len(data.val)
        times.append(time.perf_counter() - start)
    return times


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self._start)


def platform_epoch_times(experiment: str, overrides: list[str], out: str) -> list[float]:
    timer = EpochTimer()
    config = load(experiment, [*overrides, f"output_dir={out}", "trainer.progress_bar=false"])
    execute(config, callbacks=[timer])
    return timer.times


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=3)
    p.add_argument("--experiment", default="fashion_mnist_cnn")
    p.add_argument("--epochs", type=int, default=3, help="per run; the first is warm-up")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs: at least 2 (the first is warm-up)")
    overrides = [*args.overrides, f"trainer.max_epochs={args.epochs}", "tracking.wandb=disabled"]
    config = load(args.experiment, overrides)
    print(f"{args.experiment} {' '.join(args.overrides)}: {len(load_data(config).train)} train "
          f"images, batch {config.data.batch_size}, {torch.get_num_threads()} threads")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as out:
        runs = {
            "plain": lambda: plain_epoch_times(config, args.epochs),
            "paralab": lambda: platform_epoch_times(args.experiment, overrides, out),
        }
        for repeat in range(args.repeats):
            times = alternating(runs, repeat)
            plain, ours = (statistics.median(times[name][1:]) for name in runs)
            rows.append({"repeat": repeat, "plain_s": plain, "paralab_s": ours,
                         "paralab/plain": ours / plain})  # fmt: skip
            print(f"repeat {repeat + 1}: plain {plain:.2f} s/epoch, paralab {ours:.2f} s/epoch, "
                  f"ratio {ours / plain:.3f}", flush=True)  # fmt: skip
    write_json(args.output, rows, summarize(rows, ["paralab/plain"]))


if __name__ == "__main__":
    main()
