"""The ``sampled`` partition: each client draws its own images, so clients may outnumber them."""

import csv
from pathlib import Path

import numpy as np
import pytest

import paralab
from paralab.cli import main
from paralab.strategies.federated.partition import (
    SampledPartition,
    histograms,
    partition,
    write_histograms,
)

LABELS = np.repeat(np.arange(10), 100)  # 1,000 labels, 100 per class


def test_sampled_is_lazy_deterministic_per_seed_and_client():
    parts = partition(LABELS, 100_000, "sampled", seed=3, samples_per_client=60)
    assert isinstance(parts, SampledPartition) and len(parts) == 100_000
    again = partition(LABELS, 100_000, "sampled", seed=3, samples_per_client=60)
    other = partition(LABELS, 100_000, "sampled", seed=4, samples_per_client=60)
    for cid in (0, 1, 99_999):
        assert np.array_equal(parts[cid], again[cid])
        assert not np.array_equal(parts[cid], other[cid])
    assert not np.array_equal(parts[0], parts[1])


def test_sampled_sizes_uniqueness_and_range():
    parts = SampledPartition(len(LABELS), 50, 60, seed=0)
    for cid in range(50):
        idx = parts[cid]
        assert idx.dtype == np.int64 and len(idx) == 60
        assert len(np.unique(idx)) == 60  # without replacement within a client
        assert idx.min() >= 0 and idx.max() < len(LABELS)
    assert len(SampledPartition(len(LABELS), 3, len(LABELS), seed=0)[2]) == len(LABELS)
    with pytest.raises(IndexError):
        parts[50]
    with pytest.raises(ValueError):
        SampledPartition(10, 2, 11, seed=0)


def test_a_clients_draw_does_not_depend_on_the_number_of_clients():
    small = partition(LABELS, 10, "sampled", seed=1, samples_per_client=30)
    large = partition(LABELS, 1_000_000, "sampled", seed=1, samples_per_client=30)
    assert all(np.array_equal(small[c], large[c]) for c in range(10))


def test_overlap_matches_the_documented_expectation():
    parts = SampledPartition(len(LABELS), 500, 60, seed=2)  # each image in ~30 clients
    holders = np.bincount(np.concatenate(list(parts)), minlength=len(LABELS))
    assert parts.overlap() == pytest.approx(30.0)
    assert holders.mean() == pytest.approx(30.0)
    assert 25 < np.median(holders) < 35


def test_histograms_of_the_first_clients_only(tmp_path):
    parts = SampledPartition(len(LABELS), 5000, 20, seed=0)
    counts = histograms(LABELS, parts, 10, limit=1000)
    assert counts.shape == (1000, 10) and (counts.sum(1) == 20).all()
    write_histograms(counts, [str(i) for i in range(10)], tmp_path, "t", total=len(parts))
    lines = (tmp_path / "client_histograms.csv").read_text().splitlines()
    assert lines[0] == "# first 1000 of 5000 clients" and len(lines) == 1002
    assert (tmp_path / "client_histograms.png").is_file()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("paradigm.partition.samples_per_client=0", "paradigm.partition.samples_per_client"),
        ("paradigm.partition.samples_per_client=100000", "exceeds the training split"),
        ("paradigm.partition.samples_per_client=many", "paradigm.partition.samples_per_client"),
    ],
)
def test_bad_samples_per_client_exit_2(override, expected, tmp_path, capsys):
    args = ["quickstart_federated", "tracking.wandb=disabled", "paradigm.partition.scheme=sampled"]
    code = main(["run", *args, *override.split(), f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and "Traceback" not in err
    assert not any(Path(tmp_path).iterdir())


def test_5000_sampled_clients_train_and_learn(tmp_path):
    summary = paralab.run("quickstart_federated", [
        "tracking.wandb=disabled", "paradigm.partition.scheme=sampled",
        "paradigm.num_clients=5000", "paradigm.fraction_train=0.0008",  # 4 clients per round
        "paradigm.min_train_clients=4", "paradigm.fraction_evaluate=0", "paradigm.rounds=2",
        "paradigm.ray_num_cpus=2", "paradigm.local_epochs=5", f"output_dir={tmp_path}",
    ])  # fmt: skip
    metrics = summary["metrics"]
    assert metrics["rounds"] == 2
    assert metrics["clients/succeeded_total"] == 8
    assert metrics["test/acc"] > 0.3  # 10 classes: chance is 0.1
    run_dir = Path(summary["run_dir"])
    with (run_dir / "client_histograms.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["# first 1000 of 5000 clients"] and len(rows) == 1002


def peak_memory(clients: int, tmp_path: Path) -> int:
    """Peak PSS of this process and everything it starts (Ray, its workers) during a run of
    ``clients`` sampled clients, 4 of them per round."""
    from tools.overhead.federated import TreeMemory

    with TreeMemory(every=0.2) as memory:
        paralab.run("quickstart_federated", [
            "tracking.wandb=disabled", "paradigm.partition.scheme=sampled",
            f"paradigm.num_clients={clients}", f"paradigm.fraction_train={4 / clients}",
            "paradigm.min_train_clients=4", "paradigm.fraction_evaluate=0", "paradigm.rounds=3",
            "paradigm.ray_num_cpus=2", f"output_dir={tmp_path / str(clients)}",
        ])  # fmt: skip
    return memory.peak_pss


def test_memory_does_not_grow_with_the_number_of_clients(tmp_path):
    """Nothing per client is kept: 50,000 clients cost at most 500 MB more than 500.

    Measured here: 2.24-2.28 GB for 500, 2.43-2.57 GB for 50,000 (Flower's registry of simulated
    nodes is most of the difference). A copy of each client's 60 images would add 9 GB."""
    few, many = peak_memory(500, tmp_path), peak_memory(50_000, tmp_path)
    assert few > 100 * 2**20  # the sampler saw the run's processes
    assert many - few < 500 * 2**20, f"{few / 2**30:.2f} GB -> {many / 2**30:.2f} GB"
