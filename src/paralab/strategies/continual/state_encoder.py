"""Writing one value of a strategy's state as tensors and plain containers (see :mod:`.state`).

Every value is written as data a ``weights_only`` load accepts; an object is written as its class
name (compared on restore, never imported) and its attributes, and a value that cannot be written
as data (a function, a class) is a :class:`StateError` rather than something pickled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from avalanche.benchmarks.utils.data import AvalancheDataset
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.utils import ParamData
from torch import nn

from paralab.strategies.continual.state_format import (
    CODE,
    FACTORIES,
    ID,
    INIT_FUNCTIONS,
    MODULE_INTERNALS,
    PLAIN,
    REBUILT_TYPES,
    TAG,
    StateError,
    qualified,
)

#: Written as ``{TAG: "skip"}``: views of other state, and objects every run rebuilds from the
#: config (paralab's ConfigSchedule and LossWatch are reset at every experience).
SKIPPED_TYPES: tuple[type, ...] = (*REBUILT_TYPES, EvaluationPlugin)
SKIPPED_CLASS_NAMES = {"ConfigSchedule", "LossWatch"}


class Encoder:
    """Turns values into tensors and plain containers."""

    def __init__(self) -> None:
        self._active: set[int] = set()  # objects being encoded, to refuse cycles

    def encode(self, value: Any, path: str, objects: bool = True) -> Any:
        """``value`` as data; ``objects=False`` refuses plain objects (for dict keys and module
        attributes) instead of writing their attributes."""
        if isinstance(value, PLAIN):
            return value
        if isinstance(value, torch.Tensor):
            return value.detach()
        if isinstance(value, list):
            return self._items(value, path, objects)
        if isinstance(value, torch.Size):
            return {TAG: "size", "items": list(value)}
        if isinstance(value, tuple):
            return {TAG: "tuple", "items": self._items(value, path, objects)}
        if isinstance(value, set | frozenset):
            return {TAG: "set", "items": self._items(_ordered(value), path, objects)}
        if isinstance(value, dict):
            return self._dict(value, path, objects)
        if isinstance(value, torch.device):
            return {TAG: "device", "type": str(value)}
        if isinstance(value, ParamData):
            return self._param_data(value, path)
        if isinstance(value, AvalancheDataset):
            return self._dataset(value, path)
        if isinstance(value, nn.Module):
            return self._module(value, path)
        skipped = isinstance(value, SKIPPED_TYPES) or type(value).__name__ in SKIPPED_CLASS_NAMES
        if objects and skipped:
            return {TAG: "skip"}
        if objects and hasattr(value, "__dict__") and not isinstance(value, CODE):
            return self._object(value, path)
        raise StateError(f"{path}: a {type(value).__qualname__} cannot be stored as data")

    def _items(self, values: Iterable, path: str, objects: bool) -> list:
        return [self.encode(v, f"{path}[{i}]", objects) for i, v in enumerate(values)]

    def _dict(self, value: dict, path: str, objects: bool) -> dict[str, Any]:
        node: dict[str, Any] = {
            TAG: "dict",
            "keys": [self.encode(k, path, False) for k in value],
            "values": [self.encode(v, f"{path}[{k!r}]", objects) for k, v in value.items()],
        }
        if isinstance(value, defaultdict):
            factory = _name_in(FACTORIES, value.default_factory)
            if factory is None:
                raise StateError(f"{path}: a defaultdict of {value.default_factory!r}")
            node.update({TAG: "defaultdict", "factory": factory})
        return node

    def _param_data(self, value: ParamData, path: str) -> dict[str, Any]:
        init = _name_in(INIT_FUNCTIONS, value.init_function)
        if init is None:
            raise StateError(f"{path}: ParamData initialised by {value.init_function!r}")
        return {TAG: "param_data", "name": value.name, "data": value.data.detach(),
                "init": init, "device": str(value.device)}  # fmt: skip

    def _dataset(self, value: AvalancheDataset, path: str) -> dict[str, Any]:
        if len(value) == 0:
            return {TAG: "dataset", "ids": torch.zeros(0, dtype=torch.long), "attributes": {}}
        if not hasattr(value, ID):
            raise StateError(f"{path}: a dataset not cut from the stream's training experiences")
        attributes = {}
        for name, attribute in value._data_attributes.items():
            if name in ("targets", "targets_task_labels", ID):
                continue
            values = torch.stack([torch.as_tensor(v) for v in attribute])
            attributes[name] = {"values": values, "in_getitem": attribute.use_in_getitem}
        ids = torch.tensor([int(i) for i in getattr(value, ID)], dtype=torch.long)
        return {TAG: "dataset", "ids": ids, "attributes": attributes}

    def _module(self, value: nn.Module, path: str) -> dict[str, Any]:
        tensors = {k: v.detach() for k, v in value.state_dict().items()}
        attributes = {}
        for name, sub in value.named_modules():
            plain = {}
            for key, attr in vars(sub).items():
                if key in MODULE_INTERNALS:
                    continue
                try:
                    plain[key] = self.encode(attr, f"{path}.{name}.{key}", objects=False)
                except StateError:
                    continue  # structure (functions, specs): rebuilt with the module
            attributes[name] = {TAG: "dict", "keys": list(plain), "values": list(plain.values())}
        return {TAG: "module", "tensors": tensors, "attributes": attributes}

    def _object(self, value: Any, path: str) -> dict[str, Any]:
        if id(value) in self._active:
            raise StateError(f"{path}: a {type(value).__qualname__} that refers back to itself")
        self._active.add(id(value))
        attrs = {
            k: self.encode(v, f"{path}.{k}")
            for k, v in vars(value).items()
            if not isinstance(v, REBUILT_TYPES)
        }
        self._active.discard(id(value))
        return {TAG: "object", "class": qualified(type(value)), "attrs": attrs}


def _name_in(table: dict[str, Any], function: Any) -> str | None:
    """The name ``function`` has in ``table``, if any."""
    return next((name for name, f in table.items() if f is function), None)


def _ordered(values: set | frozenset) -> list:
    """A set's items in a stable order (sorted when they compare)."""
    try:
        return sorted(values)
    except TypeError:
        return list(values)
