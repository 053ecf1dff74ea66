"""`--resume` on a hostile or broken checkpoint: nothing runs, exit 2, one line naming the file.

Every paradigm's checkpoint (supervised ``last.ckpt``, continual ``continual.pt``, federated
``last.pt``) is loaded with ``weights_only=True``: a pickle whose ``__reduce__`` would create a
marker file is refused, and so is a truncated or garbage file. The run folder stays as it was, and
doing what the message says (deleting the file) makes the same ``--resume`` work.
"""

from __future__ import annotations

import builtins
import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml

import paralab
from paralab.cli import main
from paralab.platform.tracking import write_json
from tests.conftest import FAST

KINDS = {
    "supervised": ("quickstart_offline", "last.ckpt"),
    "continual": ("quickstart_continual", "continual.pt"),
    "federated": ("quickstart_federated", "last.pt"),
}


class Hostile:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the load runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


def hostile(path: Path, marker: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": Hostile(marker)}, path)


def truncated(path: Path, marker: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(4096)}}, path)
    path.write_bytes(path.read_bytes()[:1000])


def garbage(path: Path, marker: Path) -> None:
    path.write_bytes(b"not a checkpoint\n" * 20)


def interrupted_folder(tmp_path: Path, experiment: str) -> Path:
    """A run folder as a crash leaves it: resolved config, summary ``interrupted``, no training."""
    config = paralab.compose(experiment, [*FAST, f"output_dir={tmp_path}"])
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config.plain, sort_keys=False))
    write_json(folder / "summary.json", {"name": config.name, "paradigm": config.paradigm.name,
               "model": "cnn", "dataset": "digits", "status": "interrupted",
               "metrics": {}, "wall_time_s": 1.0})  # fmt: skip
    (folder / "metrics.csv").write_text("epoch,step,val/acc\n0,20,0.5\n")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_hostile_checkpoint_does_run_code_when_loaded_unsafely(tmp_path):
    """The guard of the tests below: this file is a real attack, not a mere unreadable file."""
    marker = tmp_path / "pwned"
    hostile(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("write", [hostile, truncated, garbage])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_resume_refuses_a_bad_checkpoint_and_leaves_the_folder_as_it_was(
    kind, write, tmp_path, capsys
):
    experiment, name = KINDS[kind]
    folder = interrupted_folder(tmp_path, experiment)
    marker = tmp_path / "pwned"
    write(folder / "checkpoints" / name, marker)
    before = snapshot(folder)

    assert main(["run", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not marker.exists()
    assert len(err) == 1 and err[0].startswith("paralab: error: ")
    assert str(folder / "checkpoints" / name) in err[0] and "Delete it" in err[0]
    if write is hostile:
        assert "could run code" in err[0]
    assert snapshot(folder) == before  # status, metrics and checkpoint as they were


def test_pickled_payload_inside_a_well_formed_continual_checkpoint_is_refused(tmp_path, capsys):
    """An old (dill) continual checkpoint holds the strategy as pickled objects: refused too."""
    folder = interrupted_folder(tmp_path, "quickstart_continual")
    marker = tmp_path / "pwned"
    payload = {"strategy": {"plugins": [Hostile(marker)]}, "progress": {"matrix": []}}
    with (folder / "checkpoints" / "continual.pt").open("wb") as file:
        pickle.dump(payload, file)
    assert main(["run", "--resume", str(folder)]) == 2
    assert not marker.exists()
    assert "continual.pt" in capsys.readouterr().err


def test_deleting_the_broken_checkpoint_as_told_lets_the_same_resume_work(tmp_path, capsys):
    summary = paralab.run("quickstart_offline", [*FAST, f"output_dir={tmp_path}"])
    folder = Path(summary["run_dir"])
    summary_file = folder / "summary.json"
    interrupted = {**json.loads(summary_file.read_text()), "status": "interrupted"}
    write_json(summary_file, interrupted)
    truncated(folder / "checkpoints" / "last.ckpt", tmp_path / "unused")
    capsys.readouterr()

    assert main(["run", "--resume", str(folder)]) == 2
    assert json.loads(summary_file.read_text())["status"] == "interrupted"
    assert main(["run", "--resume", str(folder)]) == 2  # the hint fails the same way: no change
    capsys.readouterr()
    (folder / "checkpoints" / "last.ckpt").unlink()
    assert main(["run", "--resume", str(folder)]) == 0
    assert json.loads(summary_file.read_text())["status"] == "completed"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_paradigm_loads_its_checkpoint_as_data_only(kind, tmp_path, monkeypatch):
    """Behind the runner's check, each paradigm's own load refuses the pickle as well."""
    from paralab.platform import runner

    experiment, name = KINDS[kind]
    folder = interrupted_folder(tmp_path, experiment)
    marker = tmp_path / "pwned"
    hostile(folder / "checkpoints" / name, marker)
    monkeypatch.setattr(runner, "check_checkpoints", lambda run_dir: None)
    with pytest.raises(Exception, match=r"(?i)weights.only|could run code"):
        paralab.resume(folder)
    assert not marker.exists()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_resuming_a_completed_folder_of_any_paradigm_returns_its_summary(kind, tmp_path, capsys):
    """The check is the runner's, before any paradigm code: federated starts no Ray here."""
    folder = interrupted_folder(tmp_path, KINDS[kind][0])
    summary = json.loads((folder / "summary.json").read_text())
    write_json(folder / "summary.json", {**summary, "status": "completed",
                                         "metrics": {"test/acc": 0.5}})  # fmt: skip
    before = snapshot(folder)
    assert main(["run", "--resume", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert "completed earlier" in err and "test/acc=0.5000" in out
    assert snapshot(folder) == before


@pytest.mark.parametrize("text", [b"epoch,step\n0,twenty\n", b"step\n1,2,3\n", b"\xff\xfe\x00bin"])
def test_resume_refuses_a_damaged_metrics_csv_before_writing_anything(text, tmp_path, capsys):
    folder = interrupted_folder(tmp_path, "quickstart_offline")
    (folder / "metrics.csv").write_bytes(text)
    before = snapshot(folder)
    assert main(["run", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert str(folder / "metrics.csv") in err and "delete it" in err
    assert snapshot(folder) == before
