"""Bad input: one clear message naming the key and the choices, exit code 2, no run folder."""

import pytest

from paralab.cli import main

CASES = [
    (["run", "nope"], "unknown experiment 'nope'"),
    (["run", "quickstart_offline", "model=cnnn"], "unknown model 'cnnn' (did you mean 'cnn'?)"),
    (
        ["run", "quickstart_offline", "trainer.max_epoch=3"],
        "'trainer.max_epoch' (did you mean 'max_epochs'?)",
    ),
    (["run", "quickstart_offline", "model.widht=3"], "Valid keys under 'model': name, channels"),
    (["run", "quickstart_offline", "model=vit", "model.channels=[3]"], "'model.channels'"),
    (["run", "quickstart_offline", "foo=1"], "unknown config key 'foo'"),
    (["run", "quickstart_offline", "trainer.max_epochs=abc"], "trainer.max_epochs"),
    (["run", "quickstart_offline", "model.name=foo"], "unknown model 'foo'. Choose one of: cnn"),
    (["run", "quickstart_offline", "optim.name=lion"], "optim.name='lion': choose one of sgd"),
    (["run", "quickstart_offline", "model=vit", "model.patch_size=3"], "model.patch_size=2"),
    (["run", "quickstart_offline", "data=image_folder"], "data.path is required"),
    (["run", "quickstart_offline", "data=cifar10"], "dataset 'cifar10' is not on disk"),
    (["run", "quickstart_offline", "data.augment=[blur]"], "unknown augmentation(s) ['blur']"),
    (["run", "quickstart_offline", "tracking.wandb=x"], "tracking.wandb='x'"),
    (["run", "quickstart_offline", "trainer.max_epochs"], "is not key=value"),
    (["run", "--resume", "/nonexistent/run"], "no config.yaml there"),
    (["bench", "nope"], "unknown benchmark suite 'nope'"),
    (["compare", "/nonexistent/run"], "holds no summary.json"),
    (["report", "/nonexistent/bench"], "holds no comparison.json"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(c[0][1:]) for c in CASES])
def test_bad_input_exits_2_with_one_clear_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = (
        [*argv, f"output_dir={tmp_path / 'runs'}"]
        if argv[0] == "run" and "--resume" not in argv
        else argv
    )
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("paralab: error: ")
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()
