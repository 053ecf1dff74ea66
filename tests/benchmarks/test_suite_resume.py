"""`paralab bench --only` picks runs; `paralab bench --resume` finishes an interrupted suite."""

import json

from paralab.cli import main

QUICK = ["trainer.max_epochs=1", "trainer.progress_bar=false"]


def _rows(folder):
    return {r["name"]: r for r in json.loads((folder / "comparison.json").read_text())["rows"]}


def test_only_then_resume_keeps_done_runs_and_finishes_the_rest(tmp_path, capsys):
    args = ["bench", "quickstart", "--only", "offline,continual-naive", "--output-dir"]
    assert main([*args, str(tmp_path), *QUICK]) == 0
    folder = next((tmp_path / "bench").iterdir())
    first = _rows(folder)
    assert sorted(first) == ["continual-naive", "offline"]
    assert json.loads((folder / "suite.json").read_text())["overrides"] == QUICK

    # the continual run was interrupted after a part that took 1000 s; the offline run stays
    naive_dir = folder / first["continual-naive"]["run_dir"].rsplit("/", 1)[-1]
    naive = json.loads((naive_dir / "summary.json").read_text())
    (naive_dir / "summary.json").write_text(
        json.dumps({**naive, "status": "interrupted", "wall_time_s": 1000.0})
    )
    offline_summary = folder / first["offline"]["run_dir"].rsplit("/", 1)[-1] / "summary.json"
    before = offline_summary.read_text()
    capsys.readouterr()

    assert main(["bench", "--resume", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "offline: completed earlier, kept" in err
    assert "continual-naive: continuing" in err
    assert offline_summary.read_text() == before
    second = _rows(folder)
    assert sorted(second) == ["continual-naive", "offline"]
    assert second["continual-naive"]["status"] == "completed"
    assert second["continual-naive"]["run_dir"] == first["continual-naive"]["run_dir"]
    assert second["continual-naive"]["test/acc"] == first["continual-naive"]["test/acc"]
    resumed = json.loads((naive_dir / "summary.json").read_text())
    assert resumed["resumed"] is True and resumed["wall_time_s"] > 1000.0  # both parts
    runs = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("continual-naive-")]
    assert len(runs) == 1


def test_unknown_run_name_and_bad_resume_folder_are_input_errors(tmp_path, capsys):
    assert main(["bench", "quickstart", "--only", "offline,nope"]) == 2
    err = capsys.readouterr().err
    assert "no run named 'nope'" in err and "continual-replay" in err
    assert main(["bench", "--resume", str(tmp_path)]) == 2
    assert "suite.json" in capsys.readouterr().err
    assert main(["bench", "quickstart", "--resume", str(tmp_path)]) == 2
    assert not any(tmp_path.iterdir())


def test_a_stopped_suite_says_how_to_finish_it(tmp_path, capsys, monkeypatch):
    """Ctrl-C (or a failed run) in the middle of a suite: the hint names the suite folder."""
    from paralab.platform import runner

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "execute", ctrl_c)
    code = main(["bench", "quickstart", "--only", "offline", "--output-dir", str(tmp_path), *QUICK])
    assert code == 130
    folder = next((tmp_path / "bench").iterdir())
    assert f"finish it with: paralab bench --resume {folder}" in capsys.readouterr().err
