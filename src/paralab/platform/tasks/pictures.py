"""Pictures of predictions for the run folder (``predictions.png``), one function per task."""

from __future__ import annotations

from pathlib import Path

import torch

MAX_IMAGES = 8


def figure(rows: int, cols: int, scale: float = 1.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(scale * cols, scale * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return plt, fig, axes


def _show(ax, image: torch.Tensor) -> None:
    """An NCHW-normalised image (any channels) stretched to [0, 1] for display."""
    x = image.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-6)
    if x.shape[0] == 1:  # numpy arrays: matplotlib warns when it converts tensors itself
        ax.imshow(x[0].numpy(), cmap="gray")
    else:
        ax.imshow(x[:3].permute(1, 2, 0).numpy())


def save_figure(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_classification(x, y, predicted, classes: list[str], path: Path) -> None:
    """Images with their true and predicted class (red when wrong)."""
    n = min(MAX_IMAGES, len(x))
    plt, fig, axes = figure(1, n)
    for i in range(n):
        ax = axes[0, i]
        _show(ax, x[i])
        ok = int(y[i]) == int(predicted[i])
        ax.set_title(f"{classes[int(y[i])]}\n-> {classes[int(predicted[i])]}", fontsize=7,
                     color="black" if ok else "red")  # fmt: skip
    save_figure(plt, fig, path)


def draw_segmentation(x, y, predicted, classes: list[str], path: Path) -> None:
    """Rows: images, true masks, predicted masks (one colour per class, void in white)."""
    import matplotlib

    n = min(MAX_IMAGES, len(x))
    plt, fig, axes = figure(3, n)
    cmap = matplotlib.colormaps["tab20"].resampled(max(2, len(classes))).with_extremes(over="white")
    for i in range(n):
        _show(axes[0, i], x[i])
        for row, mask in ((1, y[i]), (2, predicted[i])):
            axes[row, i].imshow(mask.cpu().numpy(), cmap=cmap, vmin=0, vmax=len(classes) - 1,
                                interpolation="nearest")  # fmt: skip
    for row, label in enumerate(("image", "true", "predicted")):
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    save_figure(plt, fig, path)


def draw_detection(x, truths, detections, classes: list[str], path: Path, min_score: float = 0.5):
    """Rows: true boxes (green), predicted boxes scoring ``min_score`` or more (red, with the
    class and score)."""
    from matplotlib.patches import Rectangle

    n = min(MAX_IMAGES, len(x))
    plt, fig, axes = figure(2, n, scale=2.0)
    for i in range(n):
        keep = detections[i]["scores"] >= min_score
        rows = (
            (truths[i]["boxes"], truths[i]["labels"], None, "lime"),
            (detections[i]["boxes"][keep], detections[i]["labels"][keep],
             detections[i]["scores"][keep], "red"),
        )  # fmt: skip
        for row, (boxes, labels, scores, colour) in enumerate(rows):
            ax = axes[row, i]
            _show(ax, x[i])
            for j, (x1, y1, x2, y2) in enumerate(boxes.detach().cpu().tolist()):
                ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                       edgecolor=colour, linewidth=1))  # fmt: skip
                text = classes[int(labels[j])]
                if scores is not None:
                    text += f" {float(scores[j]):.2f}"
                ax.text(x1, y1, text, fontsize=5, color=colour, va="bottom")
    for row, label in enumerate(("true", f"predicted (score >= {min_score})")):
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    save_figure(plt, fig, path)


def draw_image_text(x, truths: list[str], nearest: list[str], path: Path) -> None:
    """Images with their own caption and the nearest caption of the batch (red when not it)."""
    import textwrap

    n = min(MAX_IMAGES, len(x))
    plt, fig, axes = figure(1, n, scale=2.2)
    for i in range(n):
        ax = axes[0, i]
        _show(ax, x[i])
        wrap = lambda text: "\n".join(textwrap.wrap(text, 24))  # noqa: E731
        ax.set_title(f"{wrap(truths[i])}\n-> {wrap(nearest[i])}", fontsize=6,
                     color="black" if truths[i] == nearest[i] else "red")  # fmt: skip
    save_figure(plt, fig, path)
