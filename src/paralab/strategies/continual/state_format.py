"""The vocabulary of an encoded strategy state: its tags, and every name a checkpoint may use.

An encoded value is a tensor, a plain value, a list, or a dict tagged ``{TAG: kind, ...}`` with
one of :data:`KINDS`. A checkpoint can come from anywhere, so the names in it only ever select
from the tables here: :data:`CONSTRUCTIBLE` (the only classes it can create: replay-buffer data
holders), :data:`FACTORIES` and :data:`INIT_FUNCTIONS` (the only functions it can name). Nothing
else in it is looked up, imported or called.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import torch
from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader
from avalanche.training.storage_policy import ReservoirSamplingBuffer
from torch import nn
from torch.utils.data import DataLoader

#: The data attribute that numbers every training sample of the stream (experience by experience).
ID = "paralab_id"
#: The key of a tagged dict; its value is one of :data:`KINDS`.
TAG = "@"
KINDS = frozenset({
    "skip",  # left out when saved (rebuilt from the config): the fresh value is kept
    "size", "tuple", "set", "device", "dict", "defaultdict",
    "params",  # the model's own parameters, by name (the strategy's ``optimized_param_id``)
    "param_data",  # EWC/SI/MAS importances
    "dataset",  # a replay buffer, as sample ids
    "module",  # a model copy, as its tensors and plain attributes
    "object",  # any other object, as its attributes
})  # fmt: skip
PLAIN = (bool, int, float, str, type(None))
CODE = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)
#: Values that are views of other state (loaders, iterators): never saved, rebuilt on restore.
REBUILT_TYPES: tuple[type, ...] = (DataLoader, GroupBalancedInfiniteDataLoader, Iterator)
#: nn.Module's own bookkeeping: saved as the module's tensors, never as attributes.
MODULE_INTERNALS = frozenset(vars(nn.Module())) | {"training"}
#: The functions a checkpoint may name, as defaultdict factories and ParamData initialisers.
FACTORIES: dict[str, type] = {"dict": dict, "list": list, "set": set, "int": int, "float": float}
INIT_FUNCTIONS = {"zeros": torch.zeros, "ones": torch.ones}


class StateError(ValueError):
    """A value the checkpoint cannot hold, or a checkpoint that does not fit the strategy."""


def qualified(cls: type) -> str:
    """The name a checkpoint gives a class (it is compared, never imported)."""
    return f"{cls.__module__}.{cls.__qualname__}"


#: The classes a checkpoint may create (everything else must exist in the fresh strategy).
CONSTRUCTIBLE: dict[str, type] = {qualified(c): c for c in (ReservoirSamplingBuffer,)}


def check_name(name: Any, path: str) -> None:
    """Refuse an attribute name a checkpoint should not set (dunders, non-identifiers)."""
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
        raise StateError(f"{path}: {name!r} is not an attribute name")
