"""Writing an encoded strategy state back, into a strategy freshly built from the same config.

A checkpoint can come from anywhere, so the decoder trusts nothing in it: objects that exist in
the fresh strategy are filled in place (which keeps shared references, such as iCaRL's criterion
being one of its plugins), modules missing there are copies of the strategy's model, buffers are
cut again from the stream's own training data by sample id, and the only objects it creates are
the data holders in :data:`CONSTRUCTIBLE`. Every kind and name is checked against
:mod:`.state_format`; nothing in a checkpoint names a function or a class that gets called.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property, reduce
from typing import Any

import torch
from avalanche.benchmarks.utils.data import AvalancheDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from avalanche.training.utils import ParamData
from torch import nn

from paralab.strategies.continual.state_format import (
    CONSTRUCTIBLE,
    FACTORIES,
    INIT_FUNCTIONS,
    KINDS,
    MODULE_INTERNALS,
    PLAIN,
    TAG,
    StateError,
    check_name,
    qualified,
)


class Decoder:
    """Turns encoded values back, into the fresh strategy's objects where they exist."""

    def __init__(self, strategy: Any, train_datasets: Sequence[AvalancheDataset]) -> None:
        self.strategy = strategy
        self.template = copy.deepcopy(strategy.model)  # before anything is restored into it
        self.datasets = list(train_datasets)
        self._handlers = {kind: getattr(self, f"_{kind}") for kind in KINDS}

    @cached_property
    def whole(self) -> AvalancheDataset:
        """Every training sample of the stream, in :data:`ID` order."""
        return reduce(lambda whole, dataset: whole.concat(dataset), self.datasets)

    def decode(self, node: Any, target: Any, path: str) -> Any:
        """``node`` as a value, written into ``target`` (the fresh strategy's value) if it can."""
        if isinstance(node, (*PLAIN, torch.Tensor)):
            return node
        if isinstance(node, list):
            return self._items(node, target if isinstance(target, list) else [], path)
        if not isinstance(node, dict) or not isinstance(node.get(TAG), str):
            raise StateError(f"{path}: unexpected {type(node).__name__}")
        handler = self._handlers.get(node[TAG])
        if handler is None:
            raise StateError(f"{path}: unknown kind {node[TAG]!r}")
        return handler(node, target, path)

    def _items(self, items: list, old: Sequence, path: str) -> list:
        return [
            self.decode(v, old[i] if i < len(old) else None, f"{path}[{i}]")
            for i, v in enumerate(items)
        ]

    def _key(self, node: Any, path: str) -> Any:
        key = self.decode(node, None, path)
        if not isinstance(key, (*PLAIN, tuple)):
            raise StateError(f"{path}: a dict key must be a plain value")
        return key

    def _skip(self, node, target, path):
        return target

    def _size(self, node, target, path):
        return torch.Size([int(i) for i in _field(node, "items", list)])

    def _tuple(self, node, target, path):
        old = target if isinstance(target, tuple) else ()
        return tuple(self._items(_field(node, "items", list), old, path))

    def _set(self, node, target, path):
        return {self._key(v, path) for v in _field(node, "items", list)}

    def _device(self, node, target, path):
        return torch.device(_field(node, "type", str))

    def _dict(self, node, target, path):
        keys, values = _field(node, "keys", list), _field(node, "values", list)
        if len(keys) != len(values):
            raise StateError(f"{path}: {len(keys)} keys for {len(values)} values")
        old = target if isinstance(target, dict) else {}
        out = {}
        for k, v in zip(keys, values, strict=True):
            key = self._key(k, path)
            out[key] = self.decode(v, old.get(key), f"{path}[{key!r}]")
        return out

    def _defaultdict(self, node, target, path):
        factory = _lookup(FACTORIES, node, "factory", path)
        return defaultdict(factory, self._dict(node, target, path))

    def _params(self, node, target, path):
        names = _field(node, "names", list)
        own = dict(self.strategy.model.named_parameters())
        missing = [n for n in names if n not in own]
        if missing:
            raise StateError(f"{path}: parameters {missing} are not in the model")
        return {n: own[n] for n in names}

    def _param_data(self, node, target, path):
        init = _lookup(INIT_FUNCTIONS, node, "init", path)
        data = _field(node, "data", torch.Tensor)
        return ParamData(_field(node, "name", str), init_function=init, init_tensor=data,
                         device=torch.device(_field(node, "device", str)))  # fmt: skip

    def _dataset(self, node, target, path):
        ids = _field(node, "ids", torch.Tensor).long()
        if ids.numel() and (ids.min() < 0 or ids.max() >= len(self.whole)):
            raise StateError(f"{path}: sample ids outside the stream's training data")
        dataset = self.whole.subset(ids.tolist())
        for name, spec in _field(node, "attributes", dict).items():
            check_name(name, path)
            values = _field(spec, "values", torch.Tensor)
            in_getitem = _field(spec, "in_getitem", bool)
            attribute = DataAttribute(values, name=name, use_in_getitem=in_getitem)
            dataset = dataset.update_data_attribute(name, attribute)
        return dataset

    def _module(self, node, target, path):
        module = target if isinstance(target, nn.Module) else copy.deepcopy(self.template)
        _load_tensors(module, _field(node, "tensors", dict), path)
        subs = dict(module.named_modules())
        for name, attrs in _field(node, "attributes", dict).items():
            if name not in subs:
                raise StateError(f"{path}: no submodule {name!r}")
            for key, value in self._dict(attrs, None, f"{path}.{name}").items():
                check_name(key, path)
                if key in MODULE_INTERNALS:
                    raise StateError(f"{path}.{name}: {key} is not a plain attribute")
                setattr(subs[name], key, value)
        return module

    def _object(self, node, target, path):
        name = _field(node, "class", str)
        if target is not None and qualified(type(target)) == name:
            obj = target
        elif name in CONSTRUCTIBLE:
            cls = CONSTRUCTIBLE[name]
            obj = cls.__new__(cls)
        else:
            raise StateError(f"{path}: a {name} that this run's strategy does not have")
        for key, value in _field(node, "attrs", dict).items():
            check_name(key, path)
            setattr(obj, key, self.decode(value, getattr(obj, key, None), f"{path}.{key}"))
        return obj


def _load_tensors(module: nn.Module, tensors: dict[str, Any], path: str) -> None:
    """Copy saved parameters and buffers into ``module`` by name; a buffer that is ``None`` in
    the fresh module (iCaRL's class means before the first experience) is set."""
    own = module.state_dict(keep_vars=True)
    missing = sorted(set(own) - set(tensors))
    if missing:
        raise StateError(f"{path}: the checkpoint lacks {', '.join(missing[:5])}")
    for key, value in tensors.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise StateError(f"{path}: {key!r} is not a named tensor")
        prefix, _, leaf = key.rpartition(".")
        try:
            sub = module.get_submodule(prefix)
        except AttributeError:
            raise StateError(f"{path}: no submodule for {key!r}") from None
        current = own.get(key)
        if current is not None and current.shape == value.shape:
            with torch.no_grad():
                current.copy_(value)
        elif leaf in sub._parameters and sub._parameters[leaf] is not None:
            sub._parameters[leaf].data = value.to(sub._parameters[leaf].device)
        elif leaf in sub._buffers:
            sub._buffers[leaf] = value
        else:
            raise StateError(f"{path}: {key!r} is not a parameter or buffer of the model")


def _field(node: Any, key: str, kind: type) -> Any:
    if not isinstance(node, dict) or not isinstance(node.get(key), kind):
        raise StateError(f"expected {key!r} of type {kind.__name__}")
    return node[key]


def _lookup(table: dict[str, Any], node: Any, key: str, path: str) -> Any:
    """The function that ``node[key]`` names in ``table`` (and nothing outside it)."""
    name = _field(node, key, str)
    if name not in table:
        raise StateError(f"{path}: unknown {key} {name!r}")
    return table[name]
