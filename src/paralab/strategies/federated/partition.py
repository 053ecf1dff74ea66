"""Split a dataset's training labels among clients: iid, dirichlet(alpha) or label shards.

Partitions are index arrays into the training split (never copies of images), computed from the
labels and a seed only. Every Ray worker can therefore recompute the same partitions from the
config, and 1,000 clients cost a few kilobytes of indices rather than 1,000 datasets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def partition(
    labels: np.ndarray,
    num_clients: int,
    scheme: str,
    *,
    seed: int,
    alpha: float = 0.5,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """Index arrays, one per client, that together cover every label exactly once."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(len(labels)), num_clients)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, num_clients, alpha, rng)
    elif scheme == "shards":
        parts = _shards(labels, num_clients, shards_per_client, rng)
    else:
        raise ValueError(f"unknown partition scheme {scheme!r}")
    return [np.sort(p).astype(np.int64) for p in parts]


def _dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per class, proportions over clients drawn from Dir(alpha); no client is left empty."""
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for client, chunk in enumerate(np.split(idx, cuts)):
            buckets[client].append(chunk)
    parts = [np.concatenate(b) if b else np.empty(0, np.int64) for b in buckets]
    for client in range(num_clients):  # move one sample from the largest client to an empty one
        if len(parts[client]) == 0:
            donor = int(np.argmax([len(p) for p in parts]))
            parts[client], parts[donor] = parts[donor][-1:], parts[donor][:-1]
    return parts


def _shards(
    labels: np.ndarray, num_clients: int, per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """FedAvg paper: sort by label, cut into equal shards, deal ``per_client`` to each client."""
    shuffled = rng.permutation(len(labels))
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(order, num_clients * per_client)
    dealt = rng.permutation(len(shards)).reshape(num_clients, per_client)
    return [np.concatenate([shards[s] for s in row]) for row in dealt]


def histograms(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """(clients, classes) counts."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])


def summarize(counts: np.ndarray) -> dict[str, float]:
    """Scalars that describe label skew, for the metrics log."""
    sizes = counts.sum(1)
    present = (counts > 0).sum(1)
    return {
        "partition/min_size": float(sizes.min()),
        "partition/max_size": float(sizes.max()),
        "partition/mean_size": float(sizes.mean()),
        "partition/mean_classes_per_client": float(present.mean()),
    }


def write_histograms(counts: np.ndarray, classes: list[str], run_dir: Path, title: str) -> None:
    """``client_histograms.csv`` (every client) and ``client_histograms.png`` (up to 100)."""
    header = "client," + ",".join(str(c).replace(",", " ") for c in classes)
    rows = [f"{i}," + ",".join(str(int(v)) for v in row) for i, row in enumerate(counts)]
    (run_dir / "client_histograms.csv").write_text("\n".join([header, *rows]) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = counts[:100]
    fig, ax = plt.subplots(figsize=(min(16, 3 + 0.12 * len(shown)), 3.8))
    bottom = np.zeros(len(shown))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, name in enumerate(classes):
        ax.bar(
            range(len(shown)),
            shown[:, k],
            bottom=bottom,
            width=0.9,
            color=cmap(k % cmap.N),
            label=str(name),
        )
        bottom += shown[:, k]
    more = f" (first 100 of {len(counts)})" if len(counts) > 100 else ""
    ax.set_title(f"{title}{more}", fontsize=9)
    ax.set_xlabel("client")
    ax.set_ylabel("images per class")
    ax.legend(fontsize=6, ncol=1, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(run_dir / "client_histograms.png", dpi=100)
    plt.close(fig)
