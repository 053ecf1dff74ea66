"""Checkpoints are data: every one is loaded with ``weights_only=True``.

A checkpoint in a run folder may come from anywhere (a shared folder, a download); a pickled
object in it would run code on ``--resume``. So paralab saves tensors and plain values only, and
before a resume writes anything it loads every checkpoint of the folder as data: a truncated,
garbage or pickled file is bad input naming the file, and the folder is left as it was.
"""

from __future__ import annotations

from pathlib import Path

from paralab.errors import RunFolderError
from paralab.platform.tracking import CHECKPOINTS

CHECKPOINT_SUFFIXES = (".ckpt", ".pt")
CHECKPOINT_REMEDY = "Delete it to start that run over, or restore it from a copy"


def check_checkpoints(run_dir: Path) -> None:
    """Load every checkpoint of ``run_dir`` as data only (``weights_only=True``), before a
    resume starts: a truncated or garbage file, or one holding pickled objects (which could run
    code), is a :class:`RunFolderError` naming it, and the folder is left as it was."""
    import torch

    folder = run_dir / CHECKPOINTS
    paths = sorted(folder.iterdir()) if folder.is_dir() else []
    for path in [p for p in paths if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()]:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, not a torch file, or refused objects
            raise RunFolderError(
                f"checkpoint {path} cannot be loaded: {unreadable(error)}. {CHECKPOINT_REMEDY}"
            ) from None


def unreadable(error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in words a user can act on (torch's
    own message suggests ``weights_only=False``, the one thing not to do with a stranger's file)."""
    text = str(error)
    if "Weights only load failed" in text:
        return (
            "it holds pickled Python objects, not only tensors and plain values "
            "(loading them could run code)"
        )
    if isinstance(error, EOFError) or "zip archive" in text:
        return "the file is empty or cut short"
    first = text.strip().splitlines()[0][:120] if text.strip() else ""
    what = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return f"the file is damaged or not a torch checkpoint ({what})"
