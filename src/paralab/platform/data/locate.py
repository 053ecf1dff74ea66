"""Where datasets are looked for on disk, and the error that says where that was."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from paralab.errors import DatasetNotFoundError

DATA_DIR_ENV = "PARALAB_DATA_DIR"


def default_root() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, Path.home() / ".cache" / "paralab" / "data"))


def search_roots(root: str | None, extra: Iterable[str | Path] = ()) -> list[Path]:
    """The configured root (if any), $PARALAB_DATA_DIR or the cache folder, then extras."""
    roots = [Path(root).expanduser()] if root else []
    roots.append(default_root())
    roots.extend(Path(p) for p in extra)
    return list(dict.fromkeys(roots))


def find_files(
    candidates: Iterable[Path], names: list[str], suffixes: tuple[str, ...] = ("", ".gz")
) -> dict[str, Path] | None:
    """The first folder among ``candidates`` that holds every name (plain or gzipped)."""
    for folder in candidates:
        found = {}
        for name in names:
            path = next(
                (folder / (name + s) for s in suffixes if (folder / (name + s)).is_file()), None
            )
            if path is None:
                break
            found[name] = path
        else:
            return found
    return None


def not_found(dataset: str, looked: Iterable[Path], how_to_get: str) -> DatasetNotFoundError:
    where = ", ".join(str(p) for p in looked)
    return DatasetNotFoundError(
        f"dataset {dataset!r} is not on disk (looked in: {where}). "
        f"Get it: {how_to_get}, or point data.root=... (or ${DATA_DIR_ENV}) at a copy."
    )
