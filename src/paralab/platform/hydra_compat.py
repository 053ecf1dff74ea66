"""What paralab relies on beyond Hydra's public API (hydra-core 1.3): a search path of layers.

Hydra's public ``initialize_config_dir`` takes one folder. ``hydra.searchpath`` adds folders only
below it, and cannot supply the primary ``config.yaml`` either: the repository caches the miss
before the extra folders are added (``CachingConfigRepository.initialize_sources``). paralab
layers a user's folders over the packaged configs (a user file wins, a user folder may hold only
``experiment/mine.yaml``), so it builds the search path itself with the two functions that
``initialize_config_dir`` calls. ``tests/platform/test_config_layers.py`` fails with a clear
message if an upgrade moves them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

LAYER_PROVIDER = "paralab"


@contextmanager
def initialize_layers(layers: Sequence[Path], job_name: str = "paralab") -> Iterator[None]:
    """Hydra initialised with ``layers`` as its config search path, first wins.

    The global Hydra state is restored on exit, as ``initialize_config_dir`` does.
    """
    from hydra import initialize_config_dir
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    first, *below = (str(Path(folder).resolve()) for folder in layers)
    with initialize_config_dir(first, job_name=job_name, version_base="1.3"):
        if below:
            search_path = create_config_search_path(first)  # hydra's own, main (first), schema
            for folder in reversed(below):  # each lands right after "main": keeps their order
                search_path.append(LAYER_PROVIDER, f"file://{folder}", anchor="main")
            GlobalHydra.instance().clear()
            Hydra.create_main_hydra2(task_name=job_name, config_search_path=search_path)
        yield
