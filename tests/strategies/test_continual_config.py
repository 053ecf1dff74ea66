"""Impossible continual settings: exit code 2, one line naming the key and the way out."""

import pytest

from paralab.cli import main

RUN = ["run", "quickstart_continual"]
CASES = [
    (["paradigm.strategy=icarl", "paradigm.scenario=task"],
     "paradigm.strategy=icarl does not support paradigm.scenario=task"),
    (["paradigm.strategy=der", "paradigm.scenario=task"], "der supports class, domain"),
    (["paradigm.strategy=gdumb", "paradigm.scenario=task"], "Pick one of those scenarios"),
    (["paradigm.strategy=fancy"], "Choose one of: naive, joint"),
    (["paradigm.scenario=online"], "paradigm.scenario='online': choose one of class, task"),
    (["paradigm.domain_shift=blur", "paradigm.scenario=domain"], "permuted, rotated"),
    (["paradigm.plugins=[magic]"], "unknown plugin 'magic'. Choose from: replay"),
    (["paradigm.strategy=replay", "paradigm.plugins=[replay]"], "already applies replay"),
    (["paradigm.strategy=icarl", "paradigm.plugins=[ewc]"], "icarl takes no plugins"),
    (["paradigm.n_experiences=11"], "exceeds the dataset's 10 classes"),
    (["paradigm.n_experiences=3", "paradigm.scenario=task"], "pick a divisor of the 10"),
    (["paradigm.epochs=0"], "paradigm.epochs=0: must be an integer >= 1"),
    (["paradigm.mem_size=0"], "paradigm.mem_size=0: must be an integer >= 1"),
    (["paradigm.strategyy=naive"], "'paradigm.strategyy' (did you mean 'strategy'?)"),
    (["paradigm.ewc_lambda=much"], "paradigm.ewc_lambda"),
    (["trainer.devices=2"], "trainer.devices=2: a continual run trains on one device"),
    (["trainer.precision=16-mixed"], "set trainer.precision=32-true"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_impossible_settings_exit_2_and_write_nothing(overrides, message, tmp_path, capsys):
    assert main([*RUN, *overrides, f"output_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("paralab: error: ")
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()
