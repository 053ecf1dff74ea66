"""``server_method=prototypes``: the server re-balances the classifier with class prototypes.

Why: in class-incremental learning much of what is forgotten sits in the classifier, whose
head is pulled towards the classes of the latest experience (Wu et al. 2019, "Large Scale
Incremental Learning"; Zhu et al. 2021, PASS, keep per-class feature prototypes against it). In
a federation the server never sees an image, but clients can send what their features look like:
after each round a client sends, for each class of its current experience, the count, sum and
sum of squares of its trained model's pooled features (2 x classes x features floats, a few KB;
counted in ``bytes/prototypes_up``). The server keeps each client's latest statistics per class,
and after every aggregation trains the global head for ``proto_steps`` SGD steps on features
drawn from a Gaussian per class seen so far (mean and per-dimension variance of the pooled
statistics), classes drawn uniformly: old classes get as much say in the head as new ones.
The backbone is not touched, and the statistics of a class are as old as the last round in
which a client trained it (the features drift since: the method's known weakness).

It needs a classifier (``forward_features`` then a linear ``head``) and a strategy that keeps no
state of its own between rounds (FedAvgM and the adaptive ones keep their own copy of the
global weights and would undo the server's change).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paralab.errors import ConfigError
from paralab.platform.tasks.base import to_device

#: strategies that keep their own global weights or moments between rounds
STATEFUL = ("fedavgm", "fedadam", "fedyogi", "fedadagrad")


def check_prototypes(cfg: Any, config: Any, data: Any, task: Any) -> None:
    from paralab.platform.models import InputSpec
    from paralab.platform.runner import build_model

    if task.name != "classification":
        raise ConfigError(
            f"paradigm.server_method=prototypes re-trains a classifier head; task={task.name} "
            "has none. Set paradigm.server_method=none"
        )
    if cfg.strategy in STATEFUL:
        raise ConfigError(
            f"paradigm.server_method=prototypes with paradigm.strategy={cfg.strategy}: that "
            "strategy keeps its own copy of the global weights and would undo the server's "
            "head update. Choose fedavg, fedprox, fedmedian, fedtrimmedavg or krum"
        )
    spec = InputSpec(data.in_channels, data.image_size, data.num_classes)
    model = build_model(config, spec, task=task, initialize=False)
    if not isinstance(getattr(model, "head", None), nn.Linear):
        raise ConfigError(
            f"paradigm.server_method=prototypes: model={config.model.name} has no linear head "
            "on pooled features to re-train. Use a classifier (cnn, resnet18, vit) or "
            "paradigm.server_method=none"
        )


def client_prototypes(state: Any, dataset: Any, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class count (C,), feature sum and sum of squares (C, D) of the client's images,
    through its model as trained this round (in eval mode)."""
    model, task, device = state.model, state.task, state.device
    classes = task.num_classes
    count = torch.zeros(classes, dtype=torch.float64)
    total = sumsq = None
    size = state.config.data.eval_batch_size
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(index), size):
            x, y = task.unpack(to_device(task.fetch(dataset, index[start : start + size]), device))
            features = model.forward_features(x).double().cpu()
            y = y.cpu()
            if total is None:
                total = torch.zeros(classes, features.shape[1], dtype=torch.float64)
                sumsq = torch.zeros_like(total)
            count.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
            total.index_add_(0, y, features)
            sumsq.index_add_(0, y, features.pow(2))
    model.train(was_training)
    if total is None:
        return {"count": count}
    return {"count": count, "sum": total, "sumsq": sumsq}


class PrototypeStep:
    """The server side: collects clients' statistics, re-trains the head after aggregation."""

    def __init__(self, cfg: Any, model: nn.Module, seed: int) -> None:
        self.cfg, self.model, self.seed = cfg, model, seed
        self.bank: dict[int, dict[str, torch.Tensor]] = {}  # cid -> its latest per-class stats
        self.sent = 0.0

    def collect(self, cid: int, reply: Any) -> float:
        """Keep the reply's statistics (classes it had images of); take them off the reply."""
        record = reply.content["protos"]
        received = float(record.count_bytes())
        stats = dict(record.to_torch_state_dict())
        del reply.content["protos"]
        if "sum" not in stats:
            return received
        kept = self.bank.setdefault(cid, {})
        present = stats["count"] > 0
        if not kept:
            kept.update({k: torch.zeros_like(v) for k, v in stats.items()})
        for key, value in stats.items():
            kept[key][present] = value[present]
        return received

    def pooled(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Seen classes, and their feature mean and standard deviation over all clients."""
        banks = list(self.bank.values())
        count = sum(b["count"] for b in banks)
        total, sumsq = sum(b["sum"] for b in banks), sum(b["sumsq"] for b in banks)
        seen = (count > 0).nonzero().flatten()
        n = count[seen, None]
        mean = total[seen] / n
        var = (sumsq[seen] / n - mean.pow(2)).clamp_min(0)
        return seen, mean.float(), var.sqrt().float()

    def apply(self, rnd: int, arrays: Any) -> Any:
        """``arrays`` with the head trained on prototype samples (unchanged before any)."""
        from flwr.app import ArrayRecord

        from paralab.strategies.federated.client import load_arrays

        if not self.bank:
            return arrays
        seen, mean, std = self.pooled()
        if len(seen) < 2:
            return arrays
        load_arrays(self.model, arrays)
        head = self.model.head
        optimizer = torch.optim.SGD(head.parameters(), lr=self.cfg.proto_lr)
        gen = torch.Generator().manual_seed(self.seed * 7_919 + rnd)
        device = head.weight.device
        for _ in range(self.cfg.proto_steps):
            pick = torch.randint(len(seen), (self.cfg.proto_batch,), generator=gen)
            noise = torch.randn(self.cfg.proto_batch, mean.shape[1], generator=gen)
            features = (mean[pick] + std[pick] * noise).to(device)
            loss = nn.functional.cross_entropy(head(features), seen[pick].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return ArrayRecord(self.model.state_dict())

    def state(self) -> dict[str, torch.Tensor]:
        return {f"{cid}/{k}": v for cid, b in self.bank.items() for k, v in b.items()}

    def load(self, saved: dict[str, torch.Tensor]) -> None:
        self.bank = {}
        for key, value in saved.items():
            cid, name = key.split("/", 1)
            self.bank.setdefault(int(cid), {})[name] = value
