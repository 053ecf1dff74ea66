"""``PARALAB_CONFIG_DIR`` layers a user's folder over the packaged configs: a folder holding only
``experiment/mine.yaml`` composes, ``paralab list`` shows the union, a user file replaces the
packaged one of the same name, and errors list every layer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from paralab.cli import main
from paralab.errors import ConfigError
from paralab.platform.config import CONFIG_DIR_ENV, compose, config_dir, config_dirs

MINE = """\
# @package _global_
# My own experiment: the quickstart cnn with two stages.
defaults:
  - override /paradigm: supervised
name: mine
model:
  channels: [8, 16]
trainer:
  max_epochs: 1
"""

DERIVED = """\
# @package _global_
# Built on a shipped experiment.
defaults:
  - quickstart_continual
name: derived
"""


@pytest.fixture
def user_dir(tmp_path, monkeypatch) -> Path:
    """A user's config folder (with a space in its path) holding two experiments, layered on."""
    folder = tmp_path / "my configs"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "mine.yaml").write_text(MINE)
    (folder / "experiment" / "derived.yaml").write_text(DERIVED)
    monkeypatch.setenv(CONFIG_DIR_ENV, str(folder))
    return folder


def test_a_folder_with_one_experiment_composes_over_the_packaged_configs(user_dir):
    assert config_dirs() == [user_dir, config_dir()]
    mine = compose("mine", ["optim.lr=0.01"])
    assert (mine.name, mine.paradigm.name, mine.data.name) == ("mine", "supervised", "digits")
    assert list(mine.model.channels) == [8, 16] and mine.optim.lr == 0.01
    derived = compose("derived")
    assert (derived.name, derived.paradigm.name) == ("derived", "continual")
    assert compose("quickstart_offline").name == "quickstart-offline"


def test_list_shows_the_union_and_errors_name_every_layer(user_dir, capsys):
    assert main(["list", "experiments"]) == 0
    listed = capsys.readouterr().out
    assert "mine " in listed and "My own experiment" in listed and "quickstart_offline" in listed
    with pytest.raises(ConfigError) as error:
        compose("mien")
    assert "did you mean 'mine'" in str(error.value) and "quickstart_offline" in str(error.value)
    assert str(user_dir / "experiment") in str(error.value)


def test_a_user_file_replaces_the_packaged_one(user_dir):
    packaged = (config_dir() / "model" / "cnn.yaml").read_text()
    (user_dir / "model").mkdir()
    mine = re.sub(r"(?m)^channels:.*$", "channels: [4]", packaged)
    (user_dir / "model" / "cnn.yaml").write_text(mine)
    assert list(compose("quickstart_offline").model.channels) == [4]


def test_a_full_copy_still_works(tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "configs"
    shutil.copytree(config_dir(), copy)
    (copy / "experiment" / "quickstart_offline.yaml").write_text(
        (copy / "experiment" / "quickstart_offline.yaml").read_text() + "seed: 7\n"
    )
    monkeypatch.setenv(CONFIG_DIR_ENV, str(copy))
    assert compose("quickstart_offline").seed == 7


def test_a_missing_folder_is_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "nowhere"))
    assert main(["list"]) == 2
    assert f"{CONFIG_DIR_ENV}=" in capsys.readouterr().err


def test_hydra_internals_that_layering_relies_on_are_still_there():
    """If this fails after a Hydra upgrade, update paralab/platform/hydra_compat.py."""
    try:
        from hydra._internal.hydra import Hydra
        from hydra._internal.utils import create_config_search_path
    except ImportError as error:
        pytest.fail(f"hydra moved what paralab.platform.hydra_compat uses: {error}")
    assert callable(Hydra.create_main_hydra2)
    search_path = create_config_search_path(str(config_dir()))
    providers = [entry.provider for entry in search_path.get_path()]
    assert "main" in providers, f"hydra's search path has no 'main' entry: {providers}"
