"""Avalanche's overhead: the ``naive`` strategy against a plain PyTorch loop, side by side.

Both train the same model (same initial weights) on the same class-incremental split
Fashion-MNIST experiences (or another dataset's: ``data=digits``), with the same batches, epochs,
optimizer and per-experience schedule, then test on every test experience after each one. The
ratio of training times is the price of Avalanche (target: at most 1.25), as wall time and as
this process's CPU time (with one torch thread, the CPU time is the work done; on a shared
machine other processes stretch the wall time of whichever run they overlap, so the order
alternates between repeats).
``stock`` is Avalanche's own data loaders, without paralab's batch-fetching fast path, to show
which trap the fast path avoids. Run from the repository root::

    python -m tools.overhead.continual [--repeats 3] [--train-limit 5000] [key=value ...]
"""

from __future__ import annotations

import torch

from paralab.platform.data.base import InMemoryImages, make_loader
from paralab.platform.tasks.optim import build_optimizer, build_scheduler
from tools.overhead.common import Clock, alternating, parser, summarize, write_json


def plain_loop(model, stream, optim_cfg, epochs: int, batch: int, eval_batch: int, seed: int):
    """The reference: the loop anyone would write by hand. Returns (train, eval clocks, accs)."""
    optimizer = build_optimizer(model.parameters(), optim_cfg)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=optim_cfg.label_smoothing)
    train, test = Clock(), Clock()
    accs: list[float] = []
    for i, exp in enumerate(stream):
        train.__enter__()
        loader = make_loader(exp.train, batch, shuffle=True, seed=seed * 1009 + i)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = optim_cfg.lr
        scheduler = build_scheduler(optimizer, optim_cfg, epochs, len(loader))
        model.train()
        for epoch in range(epochs):
            loader.sampler.set_epoch(epoch)
            for x, y in loader:
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
        train.__exit__()
        with test:
            accs = [accuracy(model, e.test, eval_batch) for e in stream]
    return train, test, accs


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: InMemoryImages, batch: int) -> float:
    model.eval()
    correct = 0
    for x, y in make_loader(images, batch, shuffle=False):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(images)


def avalanche_naive(model, stream, config, task, fast_data: bool):
    """The same run through paralab's continual engine (Avalanche ``Naive``, the task's loss and
    the platform's evaluation loop)."""
    from paralab.strategies.continual import engine

    cfg = config.paradigm
    strategy = engine.build_strategy(
        cfg,
        model,
        build_optimizer(model.parameters(), config.optim),
        task=task,
        optim_cfg=config.optim,
        stream=stream,
        device=torch.device("cpu"),
        epochs=config.trainer.max_epochs,
        batch_size=config.data.batch_size,
        eval_batch_size=config.data.eval_batch_size,
        seed=config.seed,
        fast_data=fast_data,
    )
    benchmark = engine.to_benchmark(stream, task)
    train, test = Clock(), Clock()
    accs: list[float] = []
    for exp in benchmark.train_stream:
        with train:
            engine.train(strategy, exp)
        with test:
            results = engine.evaluate(strategy, stream, task, config.data.eval_batch_size)
            accs = [task.score(r) for r in results]
    return train, test, accs


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, repeats=3)
    p.add_argument("--train-limit", type=int, default=5000, help="training images (all: 0)")
    p.add_argument("--test-limit", type=int, default=2000, help="test images (all: 0)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per experience")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--no-stock", action="store_true", help="skip Avalanche's own loaders")
    args = p.parse_args(argv)

    from paralab.platform.config import load
    from paralab.platform.runner import build_model, build_task, prepare
    from paralab.strategies.continual.scenarios import build_stream

    torch.set_num_threads(args.threads)
    overrides = [
        "paradigm=continual",
        "paradigm.strategy=naive",
        "tracking.wandb=disabled",
        f"trainer.max_epochs={args.epochs}",
        *args.overrides,
    ]
    if args.train_limit:
        overrides.append(f"data.train_limit={args.train_limit}")
    config = load("fashion_mnist_cnn", overrides)
    data, _ = prepare(config)
    task = build_task(config, data)
    test = data.test
    if args.test_limit and args.test_limit < len(test):
        test = test.subset(range(args.test_limit))
    stream = build_stream(data.train, test, data.num_classes, "class", 5, 0)
    runs = {
        "plain": lambda m: plain_loop(
            m,
            stream,
            config.optim,
            args.epochs,
            config.data.batch_size,
            config.data.eval_batch_size,
            config.seed,
        ),
        "naive": lambda m: avalanche_naive(m, stream, config, task, fast_data=True),
    }
    if not args.no_stock:
        runs["stock"] = lambda m: avalanche_naive(m, stream, config, task, fast_data=False)

    def fresh(run):  # every run starts from the same initial weights
        def go():
            torch.manual_seed(config.seed)
            return run(build_model(config, _spec(data)))

        return go

    torch.manual_seed(config.seed)  # warm-up (untimed): first-call allocations and kernels
    plain_loop(
        build_model(config, _spec(data)),
        stream[:1],
        config.optim,
        1,
        config.data.batch_size,
        config.data.eval_batch_size,
        config.seed,
    )
    rows = []
    print(
        f"split {config.data.name}, 5 x {data.num_classes // 5} classes, {len(data.train)} "
        f"train / {len(test)} test images, {args.epochs} epoch(s), batch "
        f"{config.data.batch_size}, {config.model.name}, {args.threads} thread(s)"
    )
    for r in range(args.repeats):
        timings = alternating({name: fresh(run) for name, run in runs.items()}, r)
        row: dict = {"repeat": r}
        for name, (train, test_clock, accs) in timings.items():
            row[name] = {
                "train_s": train.wall,
                "eval_s": test_clock.wall,
                "train_cpu_s": train.cpu,
                "eval_cpu_s": test_clock.cpu,
                "final_acc": sum(accs) / len(accs),
            }
        plain_train, plain_test, _ = timings["plain"]
        for name in runs:
            if name != "plain":
                train, test_clock, _ = timings[name]
                row[f"{name}/plain wall"] = train.wall / plain_train.wall
                row[f"{name}/plain cpu"] = train.cpu / plain_train.cpu
                row[f"{name}/plain cpu+eval"] = (train.cpu + test_clock.cpu) / (
                    plain_train.cpu + plain_test.cpu
                )
        rows.append(row)
        print(_line(row, runs), flush=True)
    write_json(args.output, rows, summarize(rows, [k for k in rows[0] if "/" in k]))
    return 0


def _spec(data):
    from paralab.platform.models import InputSpec

    return InputSpec(data.in_channels, data.image_size, data.num_classes)


def _line(row: dict, runs: dict) -> str:
    parts = [f"repeat {row['repeat']}:"]
    for name in runs:
        t = row[name]
        parts.append(
            f"{name} train {t['train_s']:.1f}s (cpu {t['train_cpu_s']:.1f}s) "
            f"eval {t['eval_s']:.1f}s (cpu {t['eval_cpu_s']:.1f}s) acc {t['final_acc']:.4f} |"
        )
    parts += [f"{k} {row[k]:.3f}" for k in row if "/" in k]
    return " ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
