"""Valid ranges declared next to each config field, checked by one function for every schema.

A schema declares what a field accepts where it declares its default::

    batch_size: int = bounded(128, ge=1)
    dropout: float = bounded(0.2, ge=0, lt=1)
    scheme: str = bounded("iid", choices=SCHEMES)
    devices: Any = field(default=1, metadata=limits(check=devices_problem))  # list or Any

:func:`check_bounds` walks a validated config dataclass (nested ones included) and raises a
:class:`ConfigError` in one uniform form, e.g.
``data.batch_size=0: must be an integer >= 1. Set e.g. data.batch_size=128``.
:func:`paralab.platform.config.validate_section` calls it for every section it validates, so
every check here runs before any data is loaded or any file is written.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any

from paralab.errors import ConfigError

Check = Callable[[Any, str], "str | None"]  # (value, key) -> what is wrong and the way out


@dataclass(frozen=True)
class Bounds:
    """Numeric limits (``ge gt le lt``, applied to each entry of a list), allowed ``choices``,
    a minimum list length, or a custom ``check`` (run when the others pass); ``hint`` follows
    the valid range or choices in the message."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: Sequence[Any] | None = None
    min_items: int | None = None
    check: Check | None = None
    hint: str = ""


def limits(**bounds: Any) -> dict[str, Bounds]:
    """Field metadata declaring :class:`Bounds`: ``field(default=..., metadata=limits(...))``
    (the form for list and Any fields, whose defaults ruff wants spelled with ``field``)."""
    return {"bounds": Bounds(**bounds)}


def bounded(default: Any = MISSING, **bounds: Any) -> Any:
    """A dataclass field with its default and its declared :class:`Bounds`."""
    return field(default=default, metadata=limits(**bounds))


def check_bounds(section: str, obj: Any) -> None:
    """Raise :class:`ConfigError` for the first field of ``obj`` outside its declared bounds."""
    if not is_dataclass(obj) or isinstance(obj, type):
        return
    for f in fields(obj):
        value = getattr(obj, f.name)
        key = f"{section}.{f.name}" if section else f.name
        bounds = f.metadata.get("bounds")
        if bounds is not None and value is not None:
            problem = _problem(bounds, value, key, f)
            if problem:
                raise ConfigError(f"{key}={_head(value)}: {problem}")
        check_bounds(key, value)


def _problem(b: Bounds, value: Any, key: str, f: Field) -> str | None:
    problem = _declared_problem(b, value, key, f)
    return problem if problem or b.check is None else b.check(value, key)


def _declared_problem(b: Bounds, value: Any, key: str, f: Field) -> str | None:
    items = list(value) if isinstance(value, list | tuple) else None
    if items is not None and b.min_items is not None and len(items) < b.min_items:
        return f"must list at least {b.min_items} value(s). Set e.g. {key}={_example(f)}"
    if b.choices is not None:
        bad = [v for v in (items if items is not None else [value]) if v not in b.choices]
        if bad:
            close = difflib.get_close_matches(str(bad[0]), [str(c) for c in b.choices], n=1)
            maybe = f" (did you mean {close[0]!r}?)" if close else ""
            what = "choose one of" if items is None else f"unknown entry {bad[0]!r}; choose from"
            return f"{what} {', '.join(show(c) for c in b.choices)}{b.hint}{maybe}"
    limits = [x for x in (b.ge, b.gt, b.le, b.lt) if x is not None]
    if limits and any(not _within(b, v) for v in (items if items is not None else [value])):
        integer = all(isinstance(v, int) for v in (items or [value]))
        kind = "an integer" if integer else "a finite number"
        each = "each entry " if items is not None else ""
        null = ", or null" if _nullable(f) else ""
        return f"{each}must be {kind} {range_text(b)}{b.hint}{null}. Set e.g. {key}={_example(f)}"
    return None


def _within(b: Bounds, v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return False
    return not (
        (b.ge is not None and v < b.ge)
        or (b.gt is not None and v <= b.gt)
        or (b.le is not None and v > b.le)
        or (b.lt is not None and v >= b.lt)
    )


def range_text(b: Bounds) -> str:
    """``>= 1``, ``> 0``, ``in [0, 1)``..."""
    low = (">=", "[", b.ge) if b.ge is not None else (">", "(", b.gt) if b.gt is not None else None
    high = ("<=", "]", b.le) if b.le is not None else ("<", ")", b.lt) if b.lt is not None else None
    if low and high:
        return f"in {low[1]}{show(low[2])}, {show(high[2])}{high[1]}"
    op, _, limit = low or high  # type: ignore[misc]
    return f"{op} {show(limit)}"


def _nullable(f: Field) -> bool:
    return f.default is None or "None" in str(f.type)


def _example(f: Field) -> str:
    """The field's default, as one would type it after ``key=``."""
    if f.default is not MISSING:
        return show(f.default)
    if f.default_factory is not MISSING:
        return show(f.default_factory())
    return "..."


def _head(value: Any) -> str:
    """The offending value at the start of a message: strings quoted, long ones cut."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    return show(value)


def show(value: Any, limit: int = 60) -> str:
    """A value as a user would type it in an override (true, null, [1,2], 0.001)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, list | tuple):
        text = "[" + ",".join(show(v, limit) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
