"""PNG figures (matplotlib, Agg backend, so they render on headless CI machines)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io import write_figure


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_roc(
    fpr: Sequence[float] | np.ndarray,
    tpr: Sequence[float] | np.ndarray,
    dest: str | Path,
    auc: float | None = None,
    ci: Sequence[float] | None = None,
    threshold_point: tuple[float, float] | None = None,
    title: str = "ROC",
) -> Path:
    """ROC curve with the chance diagonal, AUC (+ CI) in the legend and the operating point marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    label = "ROC" if auc is None else f"AUC {auc:.3f}"
    if auc is not None and ci is not None and all(c is not None for c in ci):
        label += f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    ax.plot(fpr, tpr, lw=2, label=label, drawstyle="steps-post")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    if threshold_point is not None:
        ax.plot(*threshold_point, "o", c="crimson", label="operating point")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return write_figure(fig, dest)


def plot_confusion(matrix: Sequence[Sequence[int]], dest: str | Path, class_names: Sequence[str], title: str) -> Path:
    """2x2 confusion matrix (rows: truth, columns: prediction) with counts in the cells."""
    plt = _pyplot()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(3.8, 3.4), dpi=120)
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return write_figure(fig, dest)


def plot_history(history: Sequence[dict[str, Any]], dest: str | Path) -> Path:
    """Training loss and validation AUC per epoch (`xpr train` writes RUN/history.png)."""
    plt = _pyplot()
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    ax.plot(ep, [h["train_loss"] for h in history], "o-", label="train loss")
    ax.set(xlabel="epoch", ylabel="loss")
    aucs = [(h["epoch"], h["val"]["auc"]) for h in history if h.get("val") and h["val"].get("auc") is not None]
    if aucs:
        ax2 = ax.twinx()
        ax2.plot(*zip(*aucs, strict=True), "s-", c="tab:orange", label="val AUC")
        ax2.set(ylabel="validation AUC", ylim=(0, 1))
    fig.tight_layout()
    return write_figure(fig, dest)
