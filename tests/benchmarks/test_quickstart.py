"""The embedded default end to end: `paralab bench quickstart` on digits."""

import json
import subprocess
import sys
from pathlib import Path

from paralab.cli import main

CI_CHECK = Path(__file__).resolve().parents[2] / ".ci" / "check_suite.py"


def ci_check(folder: Path) -> subprocess.CompletedProcess:
    """The check `.ci/run` applies to the folder `make quickstart` prints."""
    return subprocess.run([sys.executable, str(CI_CHECK), str(folder)], capture_output=True,
                          text=True)  # fmt: skip


def test_quickstart_suite_compares_its_runs(tmp_path, capsys):
    assert (
        main(["bench", "quickstart", "--output-dir", str(tmp_path), "trainer.progress_bar=false"])
        == 0
    )
    folder = next((tmp_path / "bench").iterdir())
    comparison = json.loads((folder / "comparison.json").read_text())
    rows = {r["name"]: r for r in comparison["rows"]}
    assert "offline" in rows
    assert rows["offline"]["paradigm"] == "supervised"
    assert rows["offline"]["test/acc"] > 0.9
    assert all(r["status"] == "completed" for r in rows.values())
    assert (folder / "comparison.md").read_text().count("\n|") >= len(rows) + 1
    assert (folder / "accuracy.png").stat().st_size > 1000
    assert (folder / "curves.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "| offline | supervised |" in out
    assert out.strip().splitlines()[-1] == str(folder)
    assert main(["compare", *(r["run_dir"] for r in rows.values())]) == 0
    table = capsys.readouterr().out
    for name, row in rows.items():
        assert f"| {name} | {row['paradigm']} |" in table
    assert main(["report", str(folder)]) == 0
    assert "data:image/png;base64" in (folder / "report.html").read_text()
    assert ci_check(folder).returncode == 0, ci_check(folder).stderr
    summary = Path(rows["offline"]["run_dir"]) / "summary.json"
    summary.write_text(summary.read_text().replace('"completed"', '"interrupted"'))
    failed = ci_check(folder)
    assert failed.returncode == 1 and "offline: status 'interrupted'" in failed.stderr
