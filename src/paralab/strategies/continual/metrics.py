"""The accuracy matrix and what the field reads from it: final accuracy, forgetting, BWT.

``R[i][j]`` is the test accuracy on experience j after training on experience i (rows: training
steps, columns: test experiences). With n rows and T columns (n = T for a continual stream):

- final average accuracy: mean of the last row,
- average forgetting (Chaudhry et al., 2018): over j < T-1, the best accuracy ever reached on j
  before the last step minus the accuracy at the end, averaged,
- backward transfer (Lopez-Paz & Ranzato, 2017): over j < T-1, ``R[T-1][j] - R[j][j]``, averaged.

Forgetting and BWT need a stream of at least two steps; a single row (joint training) has none.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def continual_metrics(matrix: Sequence[Sequence[float]], name: str = "acc") -> dict[str, float]:
    """``test/<name>`` and ``test/<name>_avg`` (final average of the matrix's score, e.g.
    accuracy), and ``forgetting`` and ``bwt`` when defined. A NaN cell (a score with nothing to
    score) counts as 0. A class-incremental run then replaces ``test/<name>`` by the whole test
    split's score (see :meth:`Continual._whole_test_split`)."""
    if not matrix or not matrix[-1]:
        raise ValueError("the accuracy matrix is empty")
    matrix = [[v if v == v else 0.0 for v in row] for row in matrix]
    last = list(matrix[-1])
    average = sum(last) / len(last)
    result = {f"test/{name}": average, f"test/{name}_avg": average}
    n = len(matrix)
    if n < 2 or len(last) != n:
        return result
    previous = range(n - 1)
    forgetting = [max(matrix[i][j] for i in range(n - 1)) - last[j] for j in previous]
    bwt = [last[j] - matrix[j][j] for j in previous]
    result["forgetting"] = sum(forgetting) / len(forgetting)
    result["bwt"] = sum(bwt) / len(bwt)
    return result


def write_matrix_json(
    path: Path, matrix: list[list[float]], labels: list[str], name: str = "acc"
) -> None:
    payload = {
        "rows": "after training on experience i",
        "columns": "test experience j",
        "score": f"test/{name}",
        "experiences": labels,
        "matrix": matrix,
        **{k: v for k, v in continual_metrics(matrix, name).items() if k != f"test/{name}"},
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def plot_matrix(path: Path, matrix: list[list[float]], labels: list[str], title: str) -> None:
    """A heatmap of the accuracy matrix with the value in every cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(matrix), len(matrix[0])
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * n_cols, 1.0 + 0.8 * n_rows))
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(n_rows):
        for j in range(n_cols):
            value = matrix[i][j]
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                color="black" if value > 0.6 else "white",
                fontsize=8,
            )
    ax.set_xticks(range(n_cols), labels, rotation=45, ha="right", fontsize=8)
    row_labels = labels[:n_rows] if n_rows == n_cols else ["all"] * n_rows
    ax.set_yticks(range(n_rows), row_labels, fontsize=8)
    ax.set_xlabel("test experience")
    ax.set_ylabel("after training on")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
