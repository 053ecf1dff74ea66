"""paralab: train one vision model config under every learning paradigm and compare.

Kept free of heavy imports: ``import paralab`` and ``paralab --help`` stay fast.
"""

from paralab.api import bench, compose, probe, probe_random, resume, resume_bench, run, warm
from paralab.errors import ConfigError, DatasetNotFoundError, ParalabError

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "DatasetNotFoundError",
    "ParalabError",
    "bench",
    "compose",
    "probe",
    "probe_random",
    "resume",
    "resume_bench",
    "run",
    "warm",
]
