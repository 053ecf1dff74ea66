"""Typed errors. Every message names the offending value and the way out.

The CLI turns a :class:`ParalabError` into one line on stderr and exit code 2 (bad input),
or exit code 1 for a :class:`RunFailedError` (a run that started and failed).
"""

from __future__ import annotations


class ParalabError(Exception):
    """Bad input from the user: a config, a path, a flag, missing data."""


class ConfigError(ParalabError):
    """A config key, value, type or pairing is wrong."""


class UnknownComponentError(ConfigError):
    """A config names a component that is not registered."""


class DatasetNotFoundError(ParalabError):
    """A dataset is not on disk where paralab looked, and downloading is off."""


class RunFailedError(ParalabError):
    """A run that started and could not finish (every federated client failed, a timeout).

    Not bad input: the run folder is kept with status ``failed`` (its checkpoints allow
    ``--resume``), and the CLI exits 1 instead of 2.
    """


class RunFolderError(ParalabError):
    """A run folder given to --resume or compare is missing or incomplete."""
