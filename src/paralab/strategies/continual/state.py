"""An Avalanche 0.6 strategy's state as tensors and plain types, and back.

Why: a continual checkpoint must load with ``torch.load(weights_only=True)``, which refuses every
Python object but tensors and plain containers, so that a crafted ``continual.pt`` cannot run code
on ``--resume``. Avalanche keeps a strategy's memory in objects (replay buffers as views of
datasets, EWC/SI/MAS importances in ``ParamData``, the model copies of LwF, iCaRL and GDumb, GEM's
tensors, the clock), so :func:`encode` walks the strategy's attributes and writes each value as
data:

- tensors and plain values as they are; tuples, sets, dicts and defaultdicts as tagged dicts;
- a module as its tensors (parameters and buffers, by name) and its plain attributes;
- an Avalanche dataset as the ids of its samples (every experience's training set carries a
  :data:`ID` attribute, see :func:`with_ids`) plus the tensor attributes added to it (DER's
  logits);
- any other object as its attributes; loaders and iterators are left out and rebuilt.

:func:`restore` writes the values back *into* a strategy freshly built from the same config:
objects that exist there are filled in place (which keeps shared references, such as iCaRL's
criterion being one of its plugins), modules missing there are copies of the strategy's model,
and the only objects a checkpoint can make are the data holders in :data:`CONSTRUCTIBLE`. Nothing
in a checkpoint names a function or a class that gets called.
"""

from __future__ import annotations

import copy
import types
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from avalanche.benchmarks.utils.data import AvalancheDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader
from avalanche.training.plugins import AGEMPlugin, EvaluationPlugin
from avalanche.training.storage_policy import ReservoirSamplingBuffer
from avalanche.training.utils import ParamData
from torch import nn
from torch.utils.data import DataLoader

#: The data attribute that numbers every training sample of the stream (experience by experience).
ID = "paralab_id"
TAG = "@"
#: Strategy attributes that are per-batch or per-experience scratch, or rebuilt by the paradigm.
TRANSIENT = {
    "optimizer",
    "experience",
    "adapted_dataset",
    "dataloader",
    "_plain_adapted",
    "mbatch",
    "mb_output",
    "loss",
    "_eval_streams",
    "current_eval_stream",
    "_experiences",  # JointTraining's stream, given again by the paradigm
    "device",
    "evaluator",
}
#: Objects rebuilt from the config by every run: their state is not saved.
SKIPPED_CLASSES: tuple[type, ...] = (EvaluationPlugin,)
SKIPPED_CLASS_NAMES = {"ConfigSchedule", "LossWatch"}  # paralab's: reset at every experience
#: Values that are views of other state (loaders, iterators): rebuilt by :func:`_rebuild`.
REBUILT_TYPES: tuple[type, ...] = (DataLoader, GroupBalancedInfiniteDataLoader, Iterator)
#: The classes a checkpoint may create (everything else must exist in the fresh strategy).
CONSTRUCTIBLE: dict[str, type] = {
    f"{c.__module__}.{c.__qualname__}": c for c in (ReservoirSamplingBuffer,)
}
FACTORIES: dict[str, type] = {"dict": dict, "list": list, "set": set, "int": int, "float": float}
INIT_FUNCTIONS = {"zeros": torch.zeros, "ones": torch.ones}
PLAIN = (bool, int, float, str, type(None))
CODE = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)
MODULE_INTERNALS = frozenset(vars(nn.Module())) | {"training"}


class StateError(ValueError):
    """A value the checkpoint cannot hold, or a checkpoint that does not fit the strategy."""


def with_ids(dataset: AvalancheDataset, first: int) -> AvalancheDataset:
    """``dataset`` with :data:`ID` numbering its samples from ``first``: buffers cut from it are
    then saved as these numbers instead of as Python objects."""
    return dataset.update_data_attribute(ID, list(range(first, first + len(dataset))))


def encode(strategy: Any) -> dict[str, Any]:
    """The strategy's state (its attributes minus :data:`TRANSIENT`) as tensors and plain types."""
    attrs = {k: v for k, v in vars(strategy).items() if k not in TRANSIENT}
    names = {id(p): n for n, p in strategy.model.named_parameters()}
    state = {}
    for key, value in attrs.items():
        if key == "optimized_param_id" and isinstance(value, dict):
            state[key] = {TAG: "params", "names": [names[id(p)] for p in value.values()]}
        elif not isinstance(value, REBUILT_TYPES):
            state[key] = _Encoder().encode(value, key)
    return state


def restore(strategy: Any, state: dict[str, Any], train_datasets: Sequence[AvalancheDataset]):
    """Write ``state`` (from :func:`encode`) into ``strategy``, built fresh from the same config.

    ``train_datasets`` are the stream's training experiences (with :data:`ID`), from which saved
    buffers are cut again. Raises :class:`StateError` when the state does not fit the strategy.
    """
    if not isinstance(state, dict):
        raise StateError("the strategy state is not a dict")
    decoder = _Decoder(strategy, train_datasets)
    for key, value in state.items():
        _check_name(key, "strategy")
        if key in TRANSIENT:
            continue
        if key == "optimized_param_id":
            setattr(strategy, key, decoder.params(value))
        else:
            setattr(strategy, key, decoder.decode(value, getattr(strategy, key, None), key))
    for plugin in strategy.plugins:
        _rebuild(plugin)


class _Encoder:
    """Turns one value into tensors and plain containers (see the module docstring)."""

    def __init__(self) -> None:
        self._active: set[int] = set()  # objects being encoded, to refuse cycles

    def encode(self, value: Any, path: str, objects: bool = True) -> Any:
        if isinstance(value, PLAIN):
            return value
        if isinstance(value, torch.Tensor):
            return value.detach()
        if isinstance(value, list):
            return [self.encode(v, f"{path}[{i}]", objects) for i, v in enumerate(value)]
        if isinstance(value, torch.Size):
            return {TAG: "size", "items": list(value)}
        if isinstance(value, tuple):
            return {TAG: "tuple", "items": [self.encode(v, path, objects) for v in value]}
        if isinstance(value, set | frozenset):
            return {TAG: "set", "items": [self.encode(v, path, objects) for v in _ordered(value)]}
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
        if objects and (_skipped(value) or isinstance(value, REBUILT_TYPES)):
            return {TAG: "skip"}
        if objects and hasattr(value, "__dict__") and not isinstance(value, CODE):
            return self._object(value, path)
        raise StateError(f"{path}: a {type(value).__qualname__} cannot be stored as data")

    def _dict(self, value: dict, path: str, objects: bool) -> dict[str, Any]:
        node: dict[str, Any] = {
            TAG: "dict",
            "keys": [self.encode(k, path, False) for k in value],
            "values": [self.encode(v, f"{path}[{k!r}]", objects) for k, v in value.items()],
        }
        if isinstance(value, defaultdict):
            factory = next((n for n, f in FACTORIES.items() if f is value.default_factory), None)
            if factory is None:
                raise StateError(f"{path}: a defaultdict of {value.default_factory!r}")
            node.update({TAG: "defaultdict", "factory": factory})
        return node

    def _param_data(self, value: ParamData, path: str) -> dict[str, Any]:
        init = next((n for n, f in INIT_FUNCTIONS.items() if f is value.init_function), None)
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
        cls = type(value)
        attrs = {
            k: self.encode(v, f"{path}.{k}")
            for k, v in vars(value).items()
            if not isinstance(v, REBUILT_TYPES)
        }
        self._active.discard(id(value))
        return {TAG: "object", "class": f"{cls.__module__}.{cls.__qualname__}", "attrs": attrs}


class _Decoder:
    """Writes encoded values back, into the fresh strategy's objects where they exist."""

    def __init__(self, strategy: Any, train_datasets: Sequence[AvalancheDataset]) -> None:
        self.strategy = strategy
        self.template = copy.deepcopy(strategy.model)  # before anything is restored into it
        self.datasets = list(train_datasets)
        self._whole: AvalancheDataset | None = None

    @property
    def whole(self) -> AvalancheDataset:
        """Every training sample of the stream, in :data:`ID` order."""
        if self._whole is None:
            whole = self.datasets[0]
            for dataset in self.datasets[1:]:
                whole = whole.concat(dataset)
            self._whole = whole
        return self._whole

    def params(self, node: Any) -> dict[str, nn.Parameter]:
        names = _field(node, "names", list)
        own = dict(self.strategy.model.named_parameters())
        missing = [n for n in names if n not in own]
        if missing:
            raise StateError(f"optimized parameters {missing} are not in the model")
        return {n: own[n] for n in names}

    def decode(self, node: Any, target: Any, path: str) -> Any:
        if isinstance(node, PLAIN):
            return node
        if isinstance(node, torch.Tensor):
            return node
        if isinstance(node, list):
            old = target if isinstance(target, list) else []
            return [
                self.decode(v, old[i] if i < len(old) else None, f"{path}[{i}]")
                for i, v in enumerate(node)
            ]
        if not isinstance(node, dict) or not isinstance(node.get(TAG), str):
            raise StateError(f"{path}: unexpected {type(node).__name__}")
        kind = node[TAG]
        handler = getattr(self, f"_{kind}", None)
        if kind not in KINDS or handler is None:
            raise StateError(f"{path}: unknown kind {kind!r}")
        return handler(node, target, path)

    def _skip(self, node, target, path):
        return target

    def _size(self, node, target, path):
        return torch.Size([int(i) for i in _field(node, "items", list)])

    def _tuple(self, node, target, path):
        old = target if isinstance(target, tuple) else ()
        items = _field(node, "items", list)
        return tuple(
            self.decode(v, old[i] if i < len(old) else None, path) for i, v in enumerate(items)
        )

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
        factory = FACTORIES.get(_field(node, "factory", str))
        if factory is None:
            raise StateError(f"{path}: unknown defaultdict factory")
        return defaultdict(factory, self._dict(node, target, path))

    def _key(self, node: Any, path: str) -> Any:
        key = self.decode(node, None, path)
        if not isinstance(key, (*PLAIN, tuple)):
            raise StateError(f"{path}: a dict key must be a plain value")
        return key

    def _param_data(self, node, target, path):
        init = INIT_FUNCTIONS.get(_field(node, "init", str))
        if init is None:
            raise StateError(f"{path}: unknown ParamData init function")
        data = _field(node, "data", torch.Tensor)
        return ParamData(_field(node, "name", str), init_function=init, init_tensor=data,
                         device=torch.device(_field(node, "device", str)))  # fmt: skip

    def _dataset(self, node, target, path):
        ids = _field(node, "ids", torch.Tensor).long()
        if ids.numel() and (ids.min() < 0 or ids.max() >= len(self.whole)):
            raise StateError(f"{path}: sample ids outside the stream's training data")
        dataset = self.whole.subset(ids.tolist())
        for name, spec in _field(node, "attributes", dict).items():
            _check_name(name, path)
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
                _check_name(key, path)
                if key in MODULE_INTERNALS:
                    raise StateError(f"{path}.{name}: {key} is not a plain attribute")
                setattr(subs[name], key, value)
        return module

    def _object(self, node, target, path):
        name = _field(node, "class", str)
        if target is not None and _class_name(target) == name:
            obj = target
        elif name in CONSTRUCTIBLE:
            cls = CONSTRUCTIBLE[name]
            obj = cls.__new__(cls)
        else:
            raise StateError(f"{path}: a {name} that this run's strategy does not have")
        for key, value in _field(node, "attrs", dict).items():
            _check_name(key, path)
            setattr(obj, key, self.decode(value, getattr(obj, key, None), f"{path}.{key}"))
        return obj


KINDS = {"skip", "size", "tuple", "set", "device", "dict", "defaultdict", "param_data",
         "dataset", "module", "object"}  # fmt: skip


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


def _rebuild(plugin: Any) -> None:
    """Rebuild what a plugin derives from its saved state (A-GEM's memory loader, as Avalanche's
    ``update_memory`` builds it: nothing is drawn until the first batch)."""
    if isinstance(plugin, AGEMPlugin) and plugin.buffers:
        plugin.buffer_dataloader = GroupBalancedInfiniteDataLoader(
            plugin.buffers,
            batch_size=plugin.sample_size // len(plugin.buffers),
            num_workers=0,
            pin_memory=False,
            persistent_workers=False,
        )
        plugin.buffer_dliter = iter(plugin.buffer_dataloader)


def _ordered(values: set | frozenset) -> list:
    """A set's items in a stable order (sorted when they compare)."""
    try:
        return sorted(values)
    except TypeError:
        return list(values)


def _skipped(value: Any) -> bool:
    return isinstance(value, SKIPPED_CLASSES) or type(value).__name__ in SKIPPED_CLASS_NAMES


def _class_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _field(node: Any, key: str, kind: type) -> Any:
    if not isinstance(node, dict) or not isinstance(node.get(key), kind):
        raise StateError(f"expected {key!r} of type {kind.__name__}")
    return node[key]


def _check_name(name: Any, path: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
        raise StateError(f"{path}: {name!r} is not an attribute name")
