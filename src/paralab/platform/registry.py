"""One generic registry for models, datasets, paradigms and continual/federated strategies.

A registry entry is a callable plus an optional config dataclass that types its options::

    @register_model("cnn", config=CNNConfig)
    def cnn(cfg: CNNConfig, spec: InputSpec) -> Classifier: ...

Registries are filled by importing the subpackage (its ``__init__`` imports every module), or,
for a registry given an ``entry_points`` group, by loading that group's modules the first time a
name is asked for: that is how the platform finds the paradigms without importing them. A
module whose import fails is recorded and reported when one of its names is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from paralab.errors import UnknownComponentError

T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    config: type | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        doc = (self.obj.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


class Registry(Generic[T]):
    """Name -> registered callable, with the config dataclass that types its options."""

    def __init__(self, kind: str, *, entry_points: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._broken: dict[str, str] = {}
        self._group = entry_points

    def _discover(self) -> None:
        """Load the modules of this registry's entry-point group, once (they register names)."""
        if self._group is None:
            return
        group, self._group = self._group, None  # once, even if a module asks for names
        from importlib.metadata import entry_points

        for point in entry_points(group=group):
            try:
                point.load()
            except ImportError as error:
                self.record_import_failure(point.name, error)

    def register(self, name: str, *, config: type | None = None, **meta: Any) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, config, meta)
            return obj

        return decorator

    def record_import_failure(self, module: str, error: BaseException) -> None:
        """Remember a module that failed to import, to report it when its name is asked for."""
        self._broken[module] = f"{type(error).__name__}: {error}"

    def get(self, name: str) -> Entry[T]:
        self._discover()
        if name in self._entries:
            return self._entries[name]
        hint = ""
        if name in self._broken:
            hint = f" (its module failed to import: {self._broken[name]})"
        elif self._broken:
            hint = "; modules that failed to import: " + ", ".join(
                f"{m} ({e})" for m, e in self._broken.items()
            )
        raise UnknownComponentError(
            f"unknown {self.kind} {name!r}{hint}. Choose one of: {', '.join(self.names())}"
        )

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __len__(self) -> int:
        self._discover()
        return len(self._entries)


def import_modules(registry: Registry[Any], package: str, modules: list[str]) -> None:
    """Import each ``package.module``; a failure is recorded in the registry, not raised."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(f"{package}.{module}")
        except ImportError as error:
            registry.record_import_failure(module, error)
