"""The data path: Avalanche's datasets, fed to the model in whole batches.

Avalanche's tracker reports 3x to 40x slow-downs from its data handling: per-item
``__getitem__`` through AvalancheDataset layers, a per-item collate, loaders rebuilt with worker
processes. :class:`FastDataMixin` keeps Avalanche's datasets (replay buffers, GEM memories and
iCaRL exemplars are cut from them) but, whenever a strategy trains or evaluates on an
experience's own data, feeds it through the experience's :class:`InMemoryImages`: one indexing
operation per batch, a pass-through collate, no worker processes.
"""

from __future__ import annotations

import torch
from avalanche.training.templates import SupervisedTemplate

from paralab.platform.data.base import EpochSeededSampler, InMemoryImages, make_loader


class TaskLabelled(torch.utils.data.Dataset):
    """An experience's images with its task label: batches ``[x, y, t]`` as Avalanche expects."""

    def __init__(self, images: InMemoryImages, task_label: int) -> None:
        self.images = images
        self.task_label = task_label

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        x, y = self.images[index]
        return x, y, self.task_label

    def __getitems__(self, indices):
        x, y = self.images.__getitems__(indices)
        return [x, y, torch.full_like(y, self.task_label)]


class PerItem(torch.utils.data.Dataset):
    """Avalanche's view of an experience: items ``(x, y)``, ``y`` an int label like its tensor
    datasets' (or a mask tensor, for dense tasks)."""

    def __init__(self, images: InMemoryImages) -> None:
        self.images = images
        self.targets = images.targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        x, y = self.images[index]
        return x, (int(y) if y.ndim == 0 else y)


_BASE = {
    name: getattr(SupervisedTemplate, name)
    for name in (
        "train_dataset_adaptation",
        "make_train_dataloader",
        "eval_dataset_adaptation",
        "make_eval_dataloader",
    )
}


class FastDataMixin:
    """Batch-fetching loaders for a strategy that uses an experience's data unchanged.

    Falls back to Avalanche's own loader whenever the strategy class overrides data adaptation
    or loader creation (Cumulative, DER, JointTraining, ...) or a plugin swapped the dataset.
    """

    fast_streams: dict[str, list[tuple[InMemoryImages, int]]] = {}
    loader_seed: int = 0
    avalanche_class: type = SupervisedTemplate

    def _uses_base(self, *names: str) -> bool:
        return all(getattr(self.avalanche_class, n) is _BASE[n] for n in names)

    def _fast_split(self, phase: str) -> tuple[InMemoryImages, int] | None:
        names = (f"{phase}_dataset_adaptation", f"make_{phase}_dataloader")
        if not self._uses_base(*names) or self.adapted_dataset is not self._plain_adapted:
            return None
        exp = self.experience
        items = self.fast_streams.get(exp.origin_stream.name, [])
        if exp.current_experience >= len(items):
            return None
        images, task = items[exp.current_experience]
        return (images, task) if len(images) == len(self.adapted_dataset) else None

    def train_dataset_adaptation(self, **kwargs):
        super().train_dataset_adaptation(**kwargs)
        self._plain_adapted = self.adapted_dataset

    def eval_dataset_adaptation(self, **kwargs):
        super().eval_dataset_adaptation(**kwargs)
        self._plain_adapted = self.adapted_dataset

    def make_train_dataloader(self, **kwargs):
        fast = self._fast_split("train")
        if fast is None:
            return super().make_train_dataloader(**kwargs)
        seed = self.loader_seed * 1009 + self.experience.current_experience
        self.dataloader = make_loader(
            TaskLabelled(*fast), self.train_mb_size, shuffle=True, seed=seed
        )

    def make_eval_dataloader(self, **kwargs):
        fast = self._fast_split("eval")
        if fast is None:
            return super().make_eval_dataloader(**kwargs)
        self.dataloader = make_loader(TaskLabelled(*fast), self.eval_mb_size, shuffle=False)

    def _before_training_epoch(self, **kwargs):
        sampler = getattr(self.dataloader, "sampler", None)
        if isinstance(sampler, EpochSeededSampler):
            sampler.set_epoch(self.clock.train_exp_epochs)
        super()._before_training_epoch(**kwargs)
