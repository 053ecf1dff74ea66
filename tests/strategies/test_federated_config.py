"""Bad federated settings end with exit code 2, a message naming the key, and no run folder."""

from pathlib import Path

import pytest

from paralab.cli import main

BASE = ["quickstart_federated", "tracking.wandb=disabled"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("paradigm.strategy=fedsgd", "paradigm.strategy='fedsgd'"),
        ("paradigm.partition.scheme=zipf", "paradigm.partition.scheme"),
        ("paradigm.partition.scheme=dirichlet paradigm.partition.alpha=0", "partition.alpha"),
        ("paradigm.fraction_train=0", "paradigm.fraction_train"),
        ("paradigm.min_train_clients=9", "paradigm.min_train_clients"),
        ("paradigm.byzantine.attack=backdoor", "sign_flip, gaussian, label_flip"),
        ("paradigm.faults.crash_fraction=1.5", "paradigm.faults.crash_fraction"),
        ("paradigm.client_resources.num_cpus=0", "paradigm.client_resources"),
        ("paradigm.num_clients=5000", "paradigm.num_clients=5000"),
        ("paradigm.strategy=bulyan paradigm.options.num_malicious=1", "needs at least 7 clients"),
        ("paradigm.rounds=zero", "paradigm.rounds"),
        ("paradigm.learning_rate=1", "paradigm.learning_rate"),
    ],
)
def test_bad_settings_exit_2_naming_the_key(override, expected, tmp_path, capsys):
    code = main(["run", *BASE, *override.split(), f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and "Traceback" not in err
    assert not any(Path(tmp_path).iterdir())


def test_ray_num_cpus_with_an_address_is_refused(tmp_path, capsys):
    code = main(["run", *BASE, "paradigm.ray_address=10.0.0.1:6379", "paradigm.ray_num_cpus=2",
                 f"output_dir={tmp_path}"])  # fmt: skip
    assert code == 2
    assert "paradigm.ray_num_cpus" in capsys.readouterr().err
