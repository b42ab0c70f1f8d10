"""The figures logged with trials and sweeps. Each function returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Figures are made without pyplot: no global figure manager, no display needed, and
# nothing to close; they are freed like any object.
from matplotlib.figure import Figure

TRAIN, VAL, BEST = "#1f77b4", "#ff7f0e", "#2ca02c"


def learning_curves(
    history: dict[str, Sequence[float]], epochs: Sequence[int], objective: str
) -> Figure:
    """Loss, accuracy and AUC per epoch, training against validation; the best epoch marked."""
    names = [n for n in ("loss", "accuracy", "auc") if n in history]
    fig = Figure(figsize=(4.2 * len(names), 3.4))
    axes = fig.subplots(1, len(names), squeeze=False)
    x = np.asarray(epochs) + 1
    best = _best_epoch(history.get(objective), objective)
    for ax, name in zip(axes[0], names, strict=True):
        ax.plot(x, history[name], "o-", color=TRAIN, label="training", ms=4)
        if f"val_{name}" in history:
            ax.plot(x, history[f"val_{name}"], "o-", color=VAL, label="validation", ms=4)
        if best is not None:
            ax.axvline(x[best], color=BEST, ls="--", lw=1, label=f"best epoch ({x[best]})")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if name != "loss":
            ax.set_ylim(min(0.45, np.nanmin(_all(history, name)) - 0.02), 1.0)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0][0].legend(fontsize=8)
    # Fixed margins: tight_layout costs a tenth of a second per figure, every trial.
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.15, top=0.9, wspace=0.22)
    return fig


def confusion_matrix(counts: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Counts with row percentages; rows are the true class, columns the prediction."""
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.subplots()
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            color = "white" if share[i, j] > 0.6 else "black"
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                color=color,
                fontsize=12,
            )
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.subplots_adjust(left=0.18, right=0.95, bottom=0.14, top=0.9)
    return fig


def roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str) -> Figure:
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.subplots()
    ax.plot(fpr, tpr, color=VAL, lw=2, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (sad called happy)")
    ax.set_ylabel("true positive rate (happy found)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.16, right=0.96, bottom=0.13, top=0.92)
    return fig


def objective_per_trial(
    trials: Sequence[int], scores: Sequence[float | None], objective: str, maximize: bool
) -> Figure:
    """Each trial's objective, the best so far as a step line, failed trials as crosses."""
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    x = np.asarray(trials)
    y = np.array([np.nan if s is None else s for s in scores], dtype=float)
    ok = ~np.isnan(y)
    ax.plot(x[ok], y[ok], "o", color=TRAIN, label="trial")
    if ok.any():
        pick = np.fmax if maximize else np.fmin
        best = pick.accumulate(np.where(ok, y, -np.inf if maximize else np.inf))
        shown = np.isfinite(best)
        ax.step(x[shown], best[shown], where="post", color=BEST, lw=2, label="best so far")
        low = np.nanmin(y)
        if (~ok).any():
            ax.plot(x[~ok], np.full((~ok).sum(), low), "x", color="red", ms=8, label="failed")
    elif len(x):
        ax.plot(x, np.zeros(len(x)), "x", color="red", ms=8, label="failed")
    ax.set_xlabel("trial (the <id> of trial-<id>)")
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} per trial")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.14, top=0.9)
    return fig


def _best_epoch(values: Sequence[float] | None, objective: str) -> int | None:
    if not values:
        return None
    arr = np.asarray(values, dtype=float)
    if np.isnan(arr).all():
        return None
    return int(np.nanargmin(arr) if objective.endswith("loss") else np.nanargmax(arr))


def _all(history: dict[str, Sequence[float]], name: str) -> list[float]:
    return list(history[name]) + list(history.get(f"val_{name}", []))
