"""Frozen-feature probes: the k-NN and linear probes on synthetic features, feature extraction,
and end to end: a run that ends with probes, ``paralab probe`` on its folder, the random-init
baseline, and every bad input refused with exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import paralab
from paralab.cli import main
from paralab.errors import ConfigError, RunFailedError
from paralab.platform.config import load
from paralab.platform.data import InMemoryImages
from paralab.platform.models.base import Backbone, Classifier
from paralab.platform.probes.features import extract_features
from paralab.platform.probes.knn import knn_predict, knn_probe
from paralab.platform.probes.linear import linear_probe
from paralab.platform.probes.protocol import plain_images
from paralab.platform.runner import execute

QUICK = ["tracking.wandb=disabled", "trainer.num_threads=1", "trainer.progress_bar=false"]
FEW_LABELS = "probe.train_limit=100"  # where a trained backbone's features pay off most


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is fastest, and far faster than two on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clusters(n: int, classes: int, dim: int = 16, spread: float = 0.1, seed: int = 0):
    """``n`` features around ``classes`` fixed random unit centres (the same for every
    ``seed``, which draws the points), and their labels."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(classes))
    centres = torch.nn.functional.normalize(centres, dim=1)
    labels = torch.arange(n) % classes
    noise = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return centres[labels] + spread * noise, labels


# k-NN


def test_knn_on_separable_features_is_exact_and_on_shuffled_labels_is_chance():
    train, train_y = clusters(400, 5)
    test, test_y = clusters(200, 5, seed=1)
    assert knn_probe(train, train_y, test, test_y) == 1.0
    shuffled = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))]
    assert abs(knn_probe(train, shuffled, test, test_y) - 0.2) < 0.1


def test_knn_exclude_self_leaves_each_query_out_of_its_own_vote():
    features = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(1))
    with_self = knn_predict(features, labels, features, k=1)
    assert torch.equal(with_self, labels)  # its own label, at similarity 1
    left_out = knn_predict(features, labels, features, k=1, exclude_self=True)
    assert abs(float((left_out == labels).float().mean()) - 0.25) < 0.1
    with pytest.raises(ValueError, match="exclude_self"):
        knn_predict(features, labels, features[:10], exclude_self=True)


def test_knn_k_beyond_the_bank_uses_the_whole_bank_and_pretext_monitor_shares_the_core():
    from paralab.platform.tasks.pretext.base import knn_accuracy

    features, labels = clusters(60, 3)
    assert len(knn_predict(features[:5], labels[:5], features, k=50)) == 60
    expected = float(
        (knn_predict(features, labels, features, exclude_self=True) == labels).float().mean()
    )
    assert knn_accuracy(features, labels) == expected == 1.0


# linear probe


def test_linear_probe_fits_separable_features_and_is_at_chance_on_noise():
    train, train_y = clusters(500, 10, dim=32, spread=0.1)
    test, test_y = clusters(300, 10, dim=32, spread=0.1, seed=1)
    fit = linear_probe(train, train_y, test, test_y, epochs=30)
    assert fit.test_acc > 0.95 and fit.train_acc > 0.95
    g = torch.Generator().manual_seed(5)
    noise, noise_y = torch.randn(500, 32, generator=g), torch.randint(0, 10, (500,), generator=g)
    held, held_y = torch.randn(1000, 32, generator=g), torch.randint(0, 10, (1000,), generator=g)
    chance = linear_probe(noise, noise_y, held, held_y, epochs=30)
    assert abs(chance.test_acc - 0.1) < 0.05 and chance.train_acc > chance.test_acc + 0.1


def test_linear_probe_repeats_with_its_seed():
    train, train_y = clusters(200, 4, spread=1.0)
    test, test_y = clusters(100, 4, spread=1.0, seed=3)
    a = linear_probe(train, train_y, test, test_y, epochs=5, seed=1)
    assert a == linear_probe(train, train_y, test, test_y, epochs=5, seed=1)


# features


class TinyBackbone(Backbone):
    num_features = 6
    feature_info: list = []

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 6, 3)
        self.norm = torch.nn.BatchNorm2d(6)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.norm(self.conv(x))).mean((2, 3))


def images(n: int = 70) -> InMemoryImages:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    return InMemoryImages(pixels, torch.arange(n) % 3, torch.tensor([0.5]), torch.tensor([0.25]),
                          augment=("hflip",))  # fmt: skip


def test_extract_features_batches_in_eval_mode_and_restores_the_mode():
    model = Classifier(TinyBackbone(), num_classes=3).train()
    features, labels = extract_features(model, plain_images(images()), batch_size=16)
    assert features.shape == (70, 6) and torch.equal(labels, torch.arange(70) % 3)
    assert model.training  # left as it was
    model.eval()
    x, _ = plain_images(images()).__getitems__(list(range(70)))
    assert torch.allclose(features, model.forward_features(x), atol=1e-6)  # eval: no dropout
    bare, _ = extract_features(model.backbone, plain_images(images()), batch_size=70)
    assert torch.allclose(bare, features, atol=1e-6)


def test_plain_images_drop_augmentation_and_a_limit_is_a_seeded_subset():
    data = images()
    assert plain_images(data).augment == () and len(plain_images(data)) == 70
    a, b = plain_images(data, 20, seed=0), plain_images(data, 20, seed=0)
    assert len(a) == 20 and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, plain_images(data, 20, seed=1).images)


# end to end


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory) -> dict:
    """A 3-epoch supervised digits run that ends with probes."""
    out = tmp_path_factory.mktemp("probe-runs")
    config = load("quickstart_offline", [*QUICK, "probe.enabled=true", "trainer.max_epochs=3",
                                         f"output_dir={out}"])  # fmt: skip
    return execute(config)


def test_a_run_ends_with_probe_metrics_in_its_summary(probed_run):
    metrics = probed_run["metrics"]
    assert metrics["probe/linear_acc"] > 0.8 and metrics["probe/knn_acc"] > 0.8  # chance: 0.1
    assert metrics["probe/features"] == 128 and metrics["probe/train_images"] > 1000
    saved = json.loads((Path(probed_run["run_dir"]) / "summary.json").read_text())
    assert saved["metrics"]["probe/linear_acc"] == pytest.approx(metrics["probe/linear_acc"])


def test_the_trained_backbone_probes_clearly_better_than_a_random_one(probed_run):
    trained = paralab.probe(probed_run["run_dir"], [FEW_LABELS])["metrics"]
    random = paralab.probe_random("quickstart_offline", [FEW_LABELS, *QUICK])["metrics"]
    assert trained["probe/train_images"] == random["probe/train_images"] == 100
    assert trained["probe/linear_acc"] > random["probe/linear_acc"] + 0.05
    assert trained["probe/knn_acc"] > random["probe/knn_acc"] + 0.1


def test_the_probe_command_writes_probe_json_into_the_run_folder(probed_run, capsys):
    run_dir = Path(probed_run["run_dir"])
    assert main(["probe", str(run_dir), FEW_LABELS, "probe.knn_k=10"]) == 0
    out = capsys.readouterr().out
    assert "probe/linear_acc=" in out and str(run_dir / "probe.json") in out
    written = json.loads((run_dir / "probe.json").read_text())
    assert written["probe"]["knn_k"] == 10 and written["dataset"] == "digits"
    assert written["metrics"]["probe/knn_acc"] > 0.8
    assert main(["probe", "--random", "quickstart_offline", FEW_LABELS, "probe.linear=false"]) == 0
    out = capsys.readouterr().out
    assert "random init" in out and "probe/knn_acc=" in out and "linear_acc" not in out


def test_a_group_override_replaces_the_saved_section(probed_run, tmp_path):
    from paralab.platform.probes.overrides import saved_config

    run_dir = Path(probed_run["run_dir"])
    changed = tmp_path / "config.yaml"
    changed.write_text(
        (run_dir / "config.yaml").read_text().replace("val_fraction: 0.1", "val_fraction: 0.3")
    )
    assert saved_config(changed).data.val_fraction == 0.3
    config = saved_config(changed, ["data=digits", "probe.knn_k=7"])
    assert config.data.val_fraction == 0.1 and config.probe.knn_k == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/run"], "no such folder"),
        (["{empty}"], "no config.yaml there"),
        (["{no_checkpoint}"], "no checkpoint there"),
        (["{run}", "probe.knn_k=0"], "probe.knn_k=0: must be an integer >= 1"),
        (["{run}", "probe.knnk=3"], "did you mean 'knn_k'"),
        (["{run}", "data=nope"], "unknown data 'nope'"),
        (["{run}", "probe.linear=false", "probe.knn=false"], "nothing to measure"),
        (["{run}", "experiment=quickstart_offline"], "already composed"),
        (["--random", "nope"], "unknown experiment 'nope'"),
        (["{run}", "probe.stage=5"], "probe.stage=5: model=cnn has"),
        ([], "name a run folder"),
    ],
)
def test_bad_input_is_one_message_and_exit_code_2(probed_run, tmp_path, capsys, args, message):
    run_dir = Path(probed_run["run_dir"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_checkpoint").mkdir()
    shutil.copy(run_dir / "config.yaml", tmp_path / "no_checkpoint" / "config.yaml")
    places = {
        "empty": tmp_path / "empty",
        "no_checkpoint": tmp_path / "no_checkpoint",
        "run": run_dir,
    }
    argv = ["probe", *(a.format(**places) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("paralab: error:") and message in err and len(err.splitlines()) == 1


def test_probing_needs_checkpoints_and_class_labels_before_a_folder_exists(tmp_path):
    from paralab.platform.probes.run import check_probe
    from paralab.platform.runner import load_data

    out = tmp_path / "runs"
    config = load("quickstart_offline", [*QUICK, "probe.enabled=true", "tracking.checkpoints=false",
                                         f"output_dir={out}"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"tracking\.checkpoints=true"):
        execute(config)
    assert not out.exists()
    config = load("quickstart_segmentation", ["probe.enabled=true", "data.train_images=16",
                                              "data.test_images=8"])  # fmt: skip
    with pytest.raises(ConfigError, match="masks, and the probes classify whole images"):
        check_probe(config, load_data(config), after_run=True)


def test_a_probe_that_fails_after_training_keeps_the_run_folder(tmp_path, monkeypatch):
    from paralab.platform.probes import run as probe_run

    def broken(*args, **kwargs):
        raise ConfigError("something the probe could not read")

    monkeypatch.setattr(probe_run, "_probe_checkpoint", broken)
    config = load("quickstart_offline", [*QUICK, "probe.enabled=true", "trainer.max_epochs=1",
                                         f"output_dir={tmp_path}"])  # fmt: skip
    with pytest.raises(RunFailedError, match="the run trained, but probing its backbone failed"):
        execute(config)
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_a_stage_probe_reads_that_stage_pooled_to_a_grid(probed_run, capsys):
    run_dir = Path(probed_run["run_dir"])
    assert main(["probe", str(run_dir), FEW_LABELS, "probe.stage=0", "probe.pool=2"]) == 0
    written = json.loads((run_dir / "probe.json").read_text())
    config = load("quickstart_offline", [])
    first_stage = config.model.channels[0]
    assert written["metrics"]["probe/features"] == first_stage * 2 * 2
    assert written["metrics"]["probe/knn_acc"] > 0.5
