"""Federated learning: Flower ServerApp/ClientApp on Ray workers (``paradigm=federated``).

Only :mod:`.paradigm` is imported here, and it imports Flower and Ray inside functions, so the
paradigm registry stays cheap to load.
"""

from paralab.strategies.federated import paradigm  # noqa: F401  (registers "federated")
