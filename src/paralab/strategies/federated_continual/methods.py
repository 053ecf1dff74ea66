"""What a federated-continual client runs locally (naive, replay, EWC, LwF) and the state it keeps.

Why not Avalanche's strategies or plugins: a client lives for one Flower message (one round),
trains through the federated client's lean loop, and must hand everything it wants to remember
back to the server as plain tensors. So each method is a few hooks into that loop (``begin``,
``extend`` a minibatch, add a ``penalty`` to the loss, ``end``), and its state is one
:class:`ClientMemory` that the server stores per client and sends with the client's next message
(:meth:`ClientMemory.to_arrays` / :meth:`ClientMemory.from_arrays`, a flat dict of tensors).

How each method maps onto rounds (a client trains one experience ``t`` for several rounds, maybe
skipping some; a *switch* is its first round on an experience other than the one it trained
last):

- replay (Avalanche's class-balanced-by-experience buffer): at each round's end the buffer of
  ``t`` is redrawn (seeded) from the client's images of ``t``, each experience keeping
  ``mem_size // experiences seen``; every minibatch is joined by as many images drawn from the
  buffers of the other experiences.
- EWC: every round's end computes the importances (mean over minibatches of squared gradients of
  the minibatch loss, model in eval mode, as Avalanche's ``EWCPlugin.compute_importances``) and
  the parameters, as *pending*; a switch adds the pending importances to the consolidated sum
  and makes the pending parameters the anchor (Avalanche's online mode with decay 1). The
  penalty is ``ewc_lambda * sum F (theta - anchor)^2``: lambda applied directly, no 1/2, as
  Avalanche does.
- LwF: a switch keeps the global model the client received then as the teacher, and the labels
  of the experiences it trained before; the penalty is ``lwf_alpha * KL(softmax(teacher/T) ||
  softmax(student/T))`` over those labels' logits, batchmean, without a T^2 factor (Avalanche's
  ``LearningWithoutForgetting``). Classification logits only.

Memory tensors stay on the CPU (they travel); a method copies what it needs to the model's device.
Every random draw uses a ``torch.Generator`` seeded from ``seed``, never the global RNG.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.tasks.base import to_device

_DICTS = ("buffer", "fisher", "anchor", "pending_fisher", "pending_anchor", "teacher")


def _long(values: Any) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.long)


def _cpu(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}


@dataclass
class ClientMemory:
    """One client's continual state, kept by the server between the rounds it takes part in."""

    task: int = -1  # the experience it trained last (-1: none yet)
    seen: list[int] = field(default_factory=list)  # experiences trained, first-seen order
    buffer: dict[int, torch.Tensor] = field(default_factory=dict)  # replay: exp -> indices
    fisher: dict[str, torch.Tensor] = field(default_factory=dict)  # ewc: consolidated, summed
    anchor: dict[str, torch.Tensor] = field(default_factory=dict)  # ewc: end of previous exp
    pending_fisher: dict[str, torch.Tensor] = field(default_factory=dict)  # ewc: current exp
    pending_anchor: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher: dict[str, torch.Tensor] = field(default_factory=dict)  # lwf: state dict
    old_labels: torch.Tensor = field(default_factory=lambda: _long([]))  # lwf: earlier labels

    def to_arrays(self) -> dict[str, torch.Tensor]:
        """Flat tensors: ``task``, ``seen``, ``old_labels`` and ``<dict>/<key>`` entries."""
        arrays = {"task": _long(self.task), "seen": _long(self.seen), "old_labels": self.old_labels}
        for name in _DICTS:
            for key, value in getattr(self, name).items():
                arrays[f"{name}/{key}"] = value
        return {k: v.detach().cpu() for k, v in arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, torch.Tensor]) -> ClientMemory:
        """The exact inverse of :meth:`to_arrays`; an empty mapping gives a fresh memory."""
        memory = cls()
        for key, value in arrays.items():
            value = torch.as_tensor(value)
            if key == "task":
                memory.task = int(value)
            elif key == "seen":
                memory.seen = [int(e) for e in value.flatten().tolist()]
            elif key == "old_labels":
                memory.old_labels = value.long()
            else:
                name, _, sub = key.partition("/")
                if name not in _DICTS or not sub:
                    raise KeyError(f"unknown client memory entry {key!r}")
                getattr(memory, name)[int(sub) if name == "buffer" else sub] = value
        return memory

    def nbytes(self) -> int:
        """Bytes of all its tensors (as :meth:`to_arrays` ships them)."""
        return sum(v.numel() * v.element_size() for v in self.to_arrays().values())


def _join(parts: Sequence[Any]) -> Any:
    """Batches (tuples of tensors or lists) joined element by element."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([p.to(first.device) for p in parts])
    if isinstance(first, list):
        return [item for p in parts for item in p]
    if isinstance(first, tuple):
        return type(first)(_join([p[i] for p in parts]) for i in range(len(first)))
    raise TypeError(f"cannot join batch elements of type {type(first).__name__}")


class LocalMethod:
    """naive: nothing. Subclasses Replay, EWC, LwF. One instance per client message (one round)."""

    def __init__(
        self,
        cfg: Any,
        task: Any,
        model: nn.Module,
        memory: ClientMemory,
        experiences: Sequence[Any],
        t: int,
        seed: int,
    ) -> None:
        self.cfg, self.task, self.model, self.memory = cfg, task, model, memory
        self.experiences, self.t, self.seed = experiences, t, seed
        self.device = next(model.parameters()).device
        self.generator = torch.Generator().manual_seed(seed)
        self.replayed = 0

    def begin(self) -> None:
        """Before local training: consolidate on a switch, then make ``t`` the current one."""
        if self.memory.task >= 0 and self.memory.task != self.t:
            self.consolidate()
        self.memory.task = self.t
        if self.t not in self.memory.seen:
            self.memory.seen.append(self.t)

    def consolidate(self) -> None:
        """A switch away from ``memory.task`` (``memory.seen`` does not hold ``t`` yet)."""

    def extend(self, batch: Any) -> Any:
        return batch

    def penalty(self, model: nn.Module, inputs: Any, outputs: Any) -> torch.Tensor | float:
        return 0.0

    def end(self, index: torch.Tensor) -> None:
        """After local training; ``index``: this client's indices into ``experiences[t]``."""

    def figures(self) -> dict[str, float]:
        return {
            "buffer_size": float(sum(len(b) for b in self.memory.buffer.values())),
            "replayed": float(self.replayed),
            "state_bytes": float(self.memory.nbytes()),
        }


class Replay(LocalMethod):
    """Each minibatch joined by as many images from the other experiences' buffers."""

    def extend(self, batch: Any) -> Any:
        pool = [(e, b) for e, b in self.memory.buffer.items() if e != self.t and len(b)]
        if not pool:
            return batch
        size = len(batch[0])
        owners = torch.cat([torch.full((len(b),), e, dtype=torch.long) for e, b in pool])
        indices = torch.cat([b.long() for _, b in pool])
        if len(indices) >= size:
            pick = torch.randperm(len(indices), generator=self.generator)[:size]
        else:
            pick = torch.randint(len(indices), (size,), generator=self.generator)
        parts = [batch]
        for e, _ in pool:
            chosen = indices[pick[owners[pick] == e]]
            if len(chosen):
                parts.append(self.task.fetch(self.experiences[e], chosen))
        self.replayed += size
        return _join(parts)

    def end(self, index: torch.Tensor) -> None:
        index = torch.as_tensor(index, dtype=torch.long).cpu()
        quota = self.cfg.mem_size // len(self.memory.seen)
        draw = torch.Generator().manual_seed(self.seed + 1)
        keep = torch.randperm(len(index), generator=draw)[: min(quota, len(index))]
        for e in list(self.memory.buffer):
            self.memory.buffer[e] = self.memory.buffer[e][:quota]
        self.memory.buffer[self.t] = index[keep].clone()


class EWC(LocalMethod):
    """Elastic weight consolidation with one summed importance and the latest anchor."""

    _fisher: dict[str, torch.Tensor] | None = None  # device copies, set by begin()
    _anchor: dict[str, torch.Tensor] | None = None

    def consolidate(self) -> None:
        memory = self.memory
        for name, value in memory.pending_fisher.items():
            old = memory.fisher.get(name)
            memory.fisher[name] = value.clone() if old is None else old + value
        if memory.pending_anchor:
            memory.anchor = dict(memory.pending_anchor)
        memory.pending_fisher, memory.pending_anchor = {}, {}

    def begin(self) -> None:
        super().begin()
        names = self.memory.fisher.keys() & self.memory.anchor.keys()
        self._fisher = {n: self.memory.fisher[n].to(self.device) for n in names}
        self._anchor = {n: self.memory.anchor[n].to(self.device) for n in names}

    def penalty(self, model: nn.Module, inputs: Any, outputs: Any) -> torch.Tensor | float:
        if not self._fisher or self._anchor is None:
            return 0.0
        total = torch.zeros((), device=self.device)
        for name, p in model.named_parameters():
            if name in self._fisher:
                total = total + (self._fisher[name] * (p - self._anchor[name]).pow(2)).sum()
        return self.cfg.ewc_lambda * total

    def end(self, index: torch.Tensor) -> None:
        model, task = self.model, self.task
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        fisher = [torch.zeros_like(p) for _, p in params]
        size = self.cfg.batch_size or 64
        index = torch.as_tensor(index, dtype=torch.long).cpu()
        was_training = model.training
        model.eval()  # as Avalanche's EWCPlugin.compute_importances
        batches = 0
        for start in range(0, len(index), size):
            fetched = task.fetch(self.experiences[self.t], index[start : start + size])
            x, y = task.unpack(to_device(fetched, self.device))
            loss = task.loss(task.forward(model, x), y)
            grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
            for f, g in zip(fisher, grads, strict=True):
                if g is not None:
                    f += g.detach().pow(2)
            batches += 1
        model.train(was_training)
        scale = 1.0 / max(1, batches)
        pairs = zip(params, fisher, strict=True)
        self.memory.pending_fisher = _cpu({n: f * scale for (n, _), f in pairs})
        self.memory.pending_anchor = _cpu(dict(params))


class LwF(LocalMethod):
    """Distillation from the global model received at the switch, over the old labels' logits."""

    _teacher: nn.Module | None = None  # built from memory.teacher on the first penalty

    def consolidate(self) -> None:
        memory = self.memory
        memory.teacher = _cpu(self.model.state_dict())
        labels = [self.task.partition_labels(self.experiences[e].targets) for e in memory.seen]
        memory.old_labels = torch.unique(torch.cat([lab.flatten().long() for lab in labels]))
        self._teacher = None

    def penalty(self, model: nn.Module, inputs: Any, outputs: Any) -> torch.Tensor | float:
        if not self.memory.teacher or not len(self.memory.old_labels):
            return 0.0
        if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2:
            raise ValueError("LwF distils classification logits (N, C); this task gives others")
        if self._teacher is None:
            teacher = copy.deepcopy(model)
            teacher.load_state_dict(self.memory.teacher)
            self._teacher = teacher.eval().requires_grad_(False)
            self._old = self.memory.old_labels.to(outputs.device)
        with torch.no_grad():
            prev = self.task.forward(self._teacher, inputs)
        temperature = self.cfg.lwf_temperature
        log_p = torch.log_softmax(outputs[:, self._old] / temperature, dim=1)
        q = torch.softmax(prev[:, self._old] / temperature, dim=1)
        return self.cfg.lwf_alpha * F.kl_div(log_p, q, reduction="batchmean")


METHODS: dict[str, type[LocalMethod]] = {
    "naive": LocalMethod,
    "replay": Replay,
    "ewc": EWC,
    "lwf": LwF,
}


def build_method(
    cfg: Any, task: Any, model: nn.Module, memory: ClientMemory, experiences: Sequence[Any],
    t: int, seed: int,
) -> LocalMethod:  # fmt: skip
    """The local method ``cfg.method`` names, for one client's round on experience ``t``."""
    if cfg.method not in METHODS:
        raise ConfigError(
            f"paradigm.method={cfg.method!r}: unknown local method; choose one of: "
            f"{', '.join(METHODS)}"
        )
    return METHODS[cfg.method](cfg, task, model, memory, experiences, t, seed)
