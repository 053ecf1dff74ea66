"""Continual learning through Avalanche: the ``continual`` paradigm and its method table."""

from paralab.strategies.continual import paradigm  # noqa: F401  (registers "continual")
