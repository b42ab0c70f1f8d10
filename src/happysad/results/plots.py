"""The figures logged with trials and sweeps. Each function returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from happysad.config.schema import Objective


def _figure(figsize: tuple[float, float]) -> Figure:
    """A figure made without pyplot: no global figure manager, no display needed, and
    nothing to close; it is freed like any object. (matplotlib is imported here, at the
    first figure: half a second that a command's --help should not pay.)"""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


TRAIN, VAL, BEST = "#1f77b4", "#ff7f0e", "#2ca02c"


def learning_curves(
    history: dict[str, Sequence[float]], epochs: Sequence[int], objective: str
) -> Figure:
    """Loss, accuracy and AUC per epoch, training against validation; the best epoch marked."""
    names = [n for n in ("loss", "accuracy", "auc") if n in history]
    fig = _figure(figsize=(4.2 * len(names), 3.4))
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
    """Counts with row percentages; rows are the true class, columns the prediction.
    Two classes get large numbers; more (a pretraining run's) a larger, denser grid."""
    n = len(class_names)
    many = n > 3
    fig = _figure(figsize=(4.2, 3.8) if not many else (1.0 * n + 1.6, 0.9 * n + 1.4))
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
                fontsize=9 if many else 12,
            )
    ax.set_xticks(
        range(n), class_names, rotation=35 if many else 0, ha="right" if many else "center"
    )
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if many:
        fig.tight_layout()
    else:
        fig.subplots_adjust(left=0.18, right=0.95, bottom=0.14, top=0.9)
    return fig


def _unit_square(fig: Figure, ax, xlabel: str, ylabel: str, title: str, legend: str) -> Figure:
    """The finish shared by the ROC and precision-recall curves: both axes run 0 to 1."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc=legend)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.16, right=0.96, bottom=0.13, top=0.92)
    return fig


def roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str) -> Figure:
    fig = _figure(figsize=(4.2, 4.0))
    ax = fig.subplots()
    ax.plot(fpr, tpr, color=VAL, lw=2, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="chance")
    return _unit_square(
        fig,
        ax,
        "false positive rate (sad called happy)",
        "true positive rate (happy found)",
        title,
        "lower right",
    )


def objective_per_trial(
    trials: Sequence[int], scores: Sequence[float | None], objective: str, maximize: bool
) -> Figure:
    """Each trial's objective, the best so far as a step line, failed trials as crosses."""
    fig = _figure(figsize=(6.4, 3.8))
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
    minimize = Objective(objective).direction == "min"
    return int(np.nanargmin(arr) if minimize else np.nanargmax(arr))


def _all(history: dict[str, Sequence[float]], name: str) -> list[float]:
    return list(history[name]) + list(history.get(f"val_{name}", []))


def pr(
    recall: np.ndarray, precision: np.ndarray, average: float, base_rate: float, title: str
) -> Figure:
    """Precision against recall of "happy"; the dotted line is a coin weighted by the base rate."""
    fig = _figure(figsize=(4.2, 4.0))
    ax = fig.subplots()
    ax.step(
        recall, precision, where="post", color=VAL, lw=2, label=f"average precision {average:.3f}"
    )
    ax.axhline(base_rate, color="gray", ls=":", lw=1, label=f"chance ({base_rate:.2f})")
    return _unit_square(
        fig, ax, "recall (happy found)", "precision (happy calls right)", title, "lower left"
    )


def wrong_grid(
    images: np.ndarray,
    labels: np.ndarray,
    prob: np.ndarray,
    class_names: Sequence[str],
    title: str,
    columns: int = 6,
) -> Figure:
    """The images the model got most confidently wrong, with truth and P(happy).

    One mosaic in one axes: a subplot per image costs half a second a trial."""
    count = len(images)
    rows = max(1, -(-count // columns))
    side = images.shape[1] if count else 48
    pad, caption = side // 8, side // 3
    cell_w, cell_h = side + 2 * pad, side + pad + caption
    mosaic = np.full((rows * cell_h, columns * cell_w), 255, np.uint8)
    gray = (
        images[..., 0]
        if count and images.shape[-1] == 1
        else images.mean(axis=-1)
        if count
        else images
    )
    for i in range(count):
        r, c = divmod(i, columns)
        top, left = r * cell_h + caption, c * cell_w + pad
        mosaic[top : top + side, left : left + side] = gray[i]
    fig = _figure(figsize=(1.6 * columns, 1.6 * rows * cell_h / cell_w + 0.4))
    ax = fig.add_axes((0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    for i in range(count):
        r, c = divmod(i, columns)
        truth = class_names[int(labels[i])]
        ax.text(
            c * cell_w + cell_w / 2,
            r * cell_h + caption * 0.75,
            f"true {truth}, P(happy) {prob[i]:.2f}",
            ha="center",
            va="bottom",
            fontsize=7,
            color="#b00",
        )
    if count == 0:
        ax.text(
            mosaic.shape[1] / 2,
            mosaic.shape[0] / 2,
            "no validation image was misclassified",
            ha="center",
            va="center",
        )
    fig.suptitle(title, fontsize=10, y=0.995, va="top")
    return fig


def parallel_coordinates(
    values: list[dict], scores: list[float], objective: str, maximize: bool
) -> Figure:
    """One line per finished trial across its hyperparameters, coloured by the objective;
    the best trial drawn thick. Each axis is scaled to its own range (log for learning
    rates and other ranges spanning a factor of 20 or more); choices are spread evenly."""
    names = sorted({k for v in values for k in v if len({str(x.get(k)) for x in values}) > 1})
    fig = _figure(figsize=(max(6.4, 1.25 * (len(names) + 1)), 4.4))
    ax = fig.subplots()
    if not names or not scores:
        ax.text(
            0.5, 0.5, "fewer than two finished trials, or nothing varied", ha="center", va="center"
        )
        ax.set_axis_off()
        return fig
    columns, ticks = [], []
    for name in names:
        scaled, labels = _axis([v.get(name) for v in values])
        columns.append(scaled)
        ticks.append(labels)
    y = np.asarray(scores, float)
    low, high = float(np.nanmin(y)), float(np.nanmax(y))
    columns.append((y - low) / (high - low or 1.0))
    ticks.append([(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")])
    data = np.asarray(columns).T
    cmap = matplotlib_colormap("viridis")
    best = int(np.nanargmax(y) if maximize else np.nanargmin(y))
    order = np.argsort(y if maximize else -y)  # the best drawn last, on top
    for i in order:
        shade = (y[i] - low) / (high - low or 1.0)
        ax.plot(
            range(len(names) + 1),
            data[i],
            color=cmap(shade if maximize else 1 - shade),
            lw=3.0 if i == best else 1.2,
            alpha=1.0 if i == best else 0.75,
        )
    for x, labels in enumerate(ticks):
        ax.axvline(x, color="gray", lw=0.8)
        for position, text in labels:
            ax.text(x + 0.03, position, text, fontsize=7, va="center")
    ax.set_xticks(range(len(names) + 1), [*names, objective], rotation=30, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"hyperparameters against {objective} (best trial thick)")
    fig.subplots_adjust(left=0.04, right=0.97, bottom=0.3, top=0.92)
    return fig


def _axis(column: list) -> tuple[np.ndarray, list[tuple[float, str]]]:
    present = [c for c in column if c is not None]
    numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in present)
    if numeric and len(set(present)) > 1:
        arr = np.asarray([np.nan if c is None else c for c in column], float)
        low, high = np.nanmin(arr), np.nanmax(arr)
        log_scale = low > 0 and high / low >= 20
        f = np.log10 if log_scale else (lambda a: a)
        scaled = (f(arr) - f(low)) / (f(high) - f(low))
        return np.nan_to_num(scaled, nan=-0.05), [(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")]
    levels = sorted({str(c) for c in present}, key=_natural)
    position = {level: i / max(len(levels) - 1, 1) for i, level in enumerate(levels)}
    scaled = np.asarray([position[str(c)] if c is not None else -0.05 for c in column])
    return scaled, [(p, level) for level, p in position.items()]


def _natural(text: str):
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def matplotlib_colormap(name: str):
    from matplotlib import colormaps

    return colormaps[name]


def importance_bars(importance: dict[str, float], objective: str, trials: int) -> Figure:
    names = list(importance)[:12][::-1]
    fig = _figure(figsize=(6.4, 0.45 * max(len(names), 2) + 1.3))
    ax = fig.subplots()
    if names:
        ax.barh(names, [importance[n] for n in names], color=TRAIN)
        ax.set_xlim(0, 1)
    else:
        ax.text(0.5, 0.5, "not enough finished trials that differ", ha="center", va="center")
    ax.set_xlabel(f"share of the spread of {objective} explained (eta squared, {trials} trials)")
    ax.set_title("how much each hyperparameter mattered (a rough estimate)")
    ax.grid(axis="x", alpha=0.3)
    fig.subplots_adjust(
        left=0.34, right=0.97, bottom=0.8 / (0.45 * max(len(names), 2) + 1.3), top=0.88
    )
    return fig
