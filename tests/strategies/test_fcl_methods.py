"""The federated-continual local methods on the real digits data, cnn and a 2-experience stream.

Each test plays a client through its rounds by hand (begin, extend/penalty, end) and checks what
the method keeps and adds: buffers, importances, teacher, and the penalties' values and gradients.
"""

from __future__ import annotations

import copy

import pytest
import torch

from paralab.strategies.federated_continual.config import FederatedContinualConfig
from paralab.strategies.federated_continual.methods import ClientMemory, build_method


@pytest.fixture(scope="module")
def setup():
    from paralab.platform.config import load
    from paralab.platform.models import InputSpec
    from paralab.platform.runner import build_model, build_task, load_data
    from paralab.strategies.continual.scenarios import build_stream

    config = load("quickstart_offline", ["tracking.wandb=disabled"])
    data = load_data(config)
    task = build_task(config, data)
    stream = build_stream(data.train, data.test, task.incremental_classes(), "class", 2, 0)
    spec = InputSpec(data.in_channels, data.image_size, data.num_classes)

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(config, spec, task=task)

    return task, [e.train for e in stream], model


def cfg(method: str, **kw) -> FederatedContinualConfig:
    return FederatedContinualConfig(method=method, batch_size=16, **kw)


def play(setup, method, memory, t, seed, index=None, model=None, **kw):
    """One client round without training: build, begin, end; returns the method."""
    task, trains, make = setup
    m = build_method(cfg(method, **kw), task, model or make(), memory, trains, t, seed)
    m.begin()
    m.end(torch.arange(len(trains[t])) if index is None else index)
    return m


def test_memory_round_trip(setup):
    _, _, make = setup
    memory = ClientMemory(
        task=1,
        seen=[0, 1],
        buffer={0: torch.tensor([3, 1, 4]), 1: torch.tensor([1, 5])},
        fisher={"a.weight": torch.rand(2, 3)},
        anchor={"a.weight": torch.randn(2, 3)},
        pending_fisher={"a.weight": torch.rand(2, 3), "b.bias": torch.rand(4)},
        pending_anchor={"a.weight": torch.randn(2, 3), "b.bias": torch.randn(4)},
        teacher={k: v.clone() for k, v in make().state_dict().items()},
        old_labels=torch.tensor([0, 2, 4]),
    )
    arrays = memory.to_arrays()
    assert all(isinstance(v, torch.Tensor) for v in arrays.values())
    assert {"task", "seen", "buffer/0", "fisher/a.weight", "pending_anchor/b.bias"} <= set(arrays)
    back = ClientMemory.from_arrays(arrays)
    assert back.task == 1 and back.seen == [0, 1]
    for name in ("buffer", "fisher", "anchor", "pending_fisher", "pending_anchor", "teacher"):
        ours, theirs = getattr(memory, name), getattr(back, name)
        assert list(ours) == list(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(back.old_labels, memory.old_labels)
    assert memory.nbytes() == back.nbytes() > sum(v.nbytes for v in memory.teacher.values())
    fresh = ClientMemory.from_arrays({})
    assert fresh.task == -1 and fresh.seen == [] and not fresh.buffer and fresh.nbytes() > 0
    assert fresh.to_arrays().keys() == {"task", "seen", "old_labels"}


def test_replay_buffers_and_draws(setup):
    task, trains, make = setup
    memory = ClientMemory()
    index0 = torch.arange(0, len(trains[0]), 3)  # this client's share of experience 0
    m0 = play(setup, "replay", memory, 0, seed=7, index=index0, mem_size=40)
    assert memory.seen == [0] and len(memory.buffer[0]) == min(40, len(index0))
    assert set(memory.buffer[0].tolist()) <= set(index0.tolist())
    assert len(set(memory.buffer[0].tolist())) == 40  # drawn without repeats
    assert m0.figures() == {"buffer_size": 40.0, "replayed": 0.0, "state_bytes": 40 * 8 + 16.0}

    kept = memory.buffer[0].clone()
    m1 = build_method(cfg("replay", mem_size=40), task, make(), memory, trains, 1, 8)
    m1.begin()
    batch = task.fetch(trains[1], torch.arange(16))
    images, targets = m1.extend(batch)
    assert images.shape[0] == targets.shape[0] == 32
    assert torch.equal(images[:16], batch[0]) and torch.equal(targets[:16], batch[1])
    buffered_images, buffered_targets = task.fetch(trains[0], kept)
    for image, target in zip(images[16:], targets[16:], strict=True):
        match = (buffered_images == image).flatten(1).all(1)
        assert match.any() and int(buffered_targets[match][0]) == int(target)
    assert set(targets[16:].tolist()) <= set(trains[0].targets.tolist())
    assert m1.figures()["replayed"] == 16
    m1.extend(batch)
    assert m1.figures()["replayed"] == 32

    m1.end(torch.arange(0, len(trains[1]), 3))
    assert memory.seen == [0, 1]
    assert len(memory.buffer[0]) == len(memory.buffer[1]) == 20
    assert torch.equal(memory.buffer[0], kept[:20])
    assert m1.figures()["buffer_size"] == 40


def test_replay_is_seeded(setup):
    task, trains, make = setup

    def client(seed: int):
        memory = ClientMemory()
        play(setup, "replay", memory, 0, seed=seed, mem_size=30)
        m = build_method(cfg("replay", mem_size=30), task, make(), memory, trains, 1, seed)
        m.begin()
        out = m.extend(task.fetch(trains[1], torch.arange(16)))
        return memory.buffer[0], out[0]

    (b1, x1), (b2, x2), (b3, x3) = client(5), client(5), client(6)
    assert torch.equal(b1, b2) and torch.equal(x1, x2)
    assert not torch.equal(b1, b3) and not torch.equal(x1, x3)


def hand_fisher(task, model, train, index, size):
    """Mean over minibatches of squared gradients of the loss, model in eval mode."""
    model.eval()
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    batches = 0
    for start in range(0, len(index), size):
        model.zero_grad()
        x, y = task.unpack(task.fetch(train, index[start : start + size]))
        task.loss(task.forward(model, x), y).backward()
        for n, p in model.named_parameters():
            total[n] += p.grad.pow(2)
        batches += 1
    model.zero_grad()
    model.train()
    return {n: f / batches for n, f in total.items()}


def test_ewc_penalty(setup):
    task, trains, make = setup
    memory, model = ClientMemory(), make()
    index = torch.arange(40)  # 16 + 16 + 8
    m0 = build_method(cfg("ewc", ewc_lambda=5.0), task, model, memory, trains, 0, 1)
    m0.begin()
    x, _ = task.unpack(task.fetch(trains[0], index[:16]))
    assert m0.penalty(model, x, task.forward(model, x)) == 0.0
    expected = hand_fisher(task, copy.deepcopy(model), trains[0], index, 16)
    m0.end(index)
    assert not memory.fisher and memory.pending_fisher
    for n, f in expected.items():
        torch.testing.assert_close(memory.pending_fisher[n], f)
    assert model.training  # end() restores the mode

    m1 = build_method(cfg("ewc", ewc_lambda=5.0), task, model, memory, trains, 1, 2)
    m1.begin()  # the switch consolidates
    assert not memory.pending_fisher and memory.fisher.keys() == expected.keys()
    params = dict(model.named_parameters())
    assert all(torch.equal(memory.anchor[n], params[n].detach()) for n in expected)
    x, _ = task.unpack(task.fetch(trains[1], torch.arange(16)))
    assert m1.penalty(model, x, task.forward(model, x)).item() == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    penalty = m1.penalty(model, x, task.forward(model, x))
    by_hand = 5.0 * sum(
        (memory.fisher[n] * (p.detach() - memory.anchor[n]).pow(2)).sum()
        for n, p in model.named_parameters()
    )
    assert penalty.item() > 0
    torch.testing.assert_close(penalty.detach(), by_hand)
    penalty.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_lwf_teacher_and_penalty(setup):
    task, trains, make = setup
    memory, model = ClientMemory(), make()
    m0 = build_method(cfg("lwf", lwf_alpha=2.0), task, model, memory, trains, 0, 1)
    m0.begin()
    x, _ = task.unpack(task.fetch(trains[1], torch.arange(16)))
    assert m0.penalty(model, x, task.forward(model, x)) == 0.0
    m0.end(torch.arange(32))
    assert not memory.teacher

    m1 = build_method(cfg("lwf", lwf_alpha=2.0), task, model, memory, trains, 1, 2)
    m1.begin()
    state = model.state_dict()
    assert memory.teacher.keys() == state.keys()
    assert all(torch.equal(memory.teacher[k], state[k]) for k in state)
    assert torch.equal(memory.old_labels, torch.unique(trains[0].targets))
    assert memory.old_labels.tolist() == [0, 1, 2, 3, 4]
    model.eval()  # no dropout: the student is the teacher
    assert abs(m1.penalty(model, x, task.forward(model, x)).item()) < 1e-6
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    penalty = m1.penalty(model, x, task.forward(model, x))
    assert penalty.item() > 1e-4
    penalty.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(not p.requires_grad for p in m1._teacher.parameters())
