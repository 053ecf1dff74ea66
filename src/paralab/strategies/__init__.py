"""The learning paradigms, one module (or small package) each, registered by name."""

from paralab.platform.registry import import_modules
from paralab.strategies.registry import PARADIGMS, Paradigm, ParadigmConfig, register_paradigm

import_modules(PARADIGMS, __name__, ["supervised", "continual", "federated"])

__all__ = ["PARADIGMS", "Paradigm", "ParadigmConfig", "register_paradigm"]
