"""Split a dataset's training labels among clients: iid, dirichlet(alpha), label shards, or
sampled (each client draws its own images; clients may outnumber the images).

Partitions are index arrays into the training split (never copies of images), computed from the
labels and a seed only. Every Ray worker can therefore recompute the same partitions from the
config, and 1,000 clients cost a few kilobytes of indices rather than 1,000 datasets. The
``sampled`` scheme is lazy (:class:`SampledPartition`): a client's indices are drawn when it is
asked for, so nothing grows with the number of clients.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class SampledPartition:
    """Clients that each draw ``samples_per_client`` images of the training split, uniformly
    without replacement within a client, from a generator seeded by ``(seed, cid)``.

    Clients overlap: an image is held by about ``num_clients * samples_per_client / num_train``
    clients. A client's indices depend only on the seed, its id and the split's size (not on the
    number of clients), and are computed on demand: nothing is kept per client.
    """

    def __init__(self, num_train: int, num_clients: int, samples_per_client: int, seed: int):
        if samples_per_client > num_train:
            raise ValueError(f"{samples_per_client} samples per client > {num_train} images")
        self.num_train, self.num_clients = num_train, num_clients
        self.samples_per_client, self.seed = samples_per_client, seed

    def __len__(self) -> int:
        return self.num_clients

    def __getitem__(self, cid: int) -> np.ndarray:
        cid = int(cid)
        if not 0 <= cid < self.num_clients:
            raise IndexError(f"client {cid} of {self.num_clients}")
        rng = np.random.default_rng([self.seed, cid])  # SeedSequence: independent per (seed, cid)
        picked = rng.choice(self.num_train, self.samples_per_client, replace=False)
        return np.sort(picked).astype(np.int64)

    def __iter__(self):
        return (self[cid] for cid in range(self.num_clients))

    def overlap(self) -> float:
        """Expected number of clients that hold a given image."""
        return self.num_clients * self.samples_per_client / self.num_train


def partition(
    labels: np.ndarray,
    num_clients: int,
    scheme: str,
    *,
    seed: int,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    samples_per_client: int = 60,
) -> list[np.ndarray] | SampledPartition:
    """Index arrays, one per client: for ``iid``, ``dirichlet`` and ``shards`` a list that covers
    every label exactly once; for ``sampled`` a lazy :class:`SampledPartition` (overlapping)."""
    labels = np.asarray(labels)
    if scheme == "sampled":
        return SampledPartition(len(labels), num_clients, samples_per_client, seed)
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


HISTOGRAM_CLIENTS = 1000  # the sampled scheme: histograms of the first clients only


def histograms(labels: np.ndarray, parts, num_classes: int, limit: int | None = None) -> np.ndarray:
    """(clients, classes) counts, of the first ``limit`` clients (null: all)."""
    labels = np.asarray(labels)
    count = len(parts) if limit is None else min(limit, len(parts))
    return np.stack([np.bincount(labels[parts[c]], minlength=num_classes) for c in range(count)])


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


def write_histograms(
    counts: np.ndarray, classes: list[str], run_dir: Path, title: str, total: int | None = None
) -> None:
    """``client_histograms.csv`` (every client in ``counts``) and ``client_histograms.png`` (up
    to 100). With ``total`` above ``len(counts)``, ``counts`` holds the first clients only: the
    CSV starts with a ``#`` comment line and the title says so."""
    header = "client," + ",".join(str(c).replace(",", " ") for c in classes)
    rows = [f"{i}," + ",".join(str(int(v)) for v in row) for i, row in enumerate(counts)]
    partial = total is not None and total > len(counts)
    note = [f"# first {len(counts)} of {total} clients"] if partial else []
    (run_dir / "client_histograms.csv").write_text("\n".join([*note, header, *rows]) + "\n")
    import matplotlib
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    # one collection of bars per class: 100 clients x 10 classes as patches took 1.6 s to draw
    shown = counts[:100]
    fig = Figure(figsize=(min(16, 3 + 0.12 * len(shown)), 3.8))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    x = np.arange(len(shown))[:, None] + np.array([-0.45, -0.45, 0.45, 0.45])
    bottom = np.zeros(len(shown))
    for k, name in enumerate(classes):
        top = bottom + shown[:, k]
        heights = np.stack([bottom, top, top, bottom], axis=1)
        bars = np.stack([x, heights], axis=2)  # (clients, 4 corners, xy)
        ax.add_collection(PolyCollection(bars, facecolors=cmap(k % cmap.N), label=str(name)))
        bottom = top
    ax.autoscale_view()
    ax.set_ylim(bottom=0)
    of = total if partial else len(counts)
    more = f" (first {len(shown)} of {of})" if of > len(shown) else ""
    if partial and len(counts) > len(shown):
        more += f"; partition/* metrics over the first {len(counts)}"
    ax.set_title(f"{title}{more}", fontsize=9)
    ax.set_xlabel("client")
    ax.set_ylabel("images per class")
    ax.legend(fontsize=6, ncol=1, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(run_dir / "client_histograms.png", dpi=100)
