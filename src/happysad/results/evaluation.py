"""Binary classification metrics from labels and P(happy), and the many-class ones a
pretraining run reports, in plain numpy."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """[[true sad, sad called happy], [happy called sad, true happy]]."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(prob).ravel() >= threshold
    return np.array(
        [[np.sum(~y & ~pred), np.sum(~y & pred)], [np.sum(y & ~pred), np.sum(y & pred)]],
        dtype=int,
    )


def class_confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts of (true class, predicted class), rows the true class."""
    counts = np.zeros((classes, classes), dtype=int)
    np.add.at(counts, (np.asarray(truth, int), np.asarray(predicted, int)), 1)
    return counts


def class_recall(counts: np.ndarray) -> np.ndarray:
    """Each class's recall (0 for a class with no image)."""
    return counts.diagonal() / np.maximum(counts.sum(axis=1), 1)


def balanced_accuracy(counts: np.ndarray) -> float:
    """The mean recall over the classes that have images."""
    present = counts.sum(axis=1) > 0
    return float(class_recall(counts)[present].mean())


def _ranked(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels sorted by falling score; for each distinct score, how many images score at
    least that much and how many of them are happy (tied scores form one step)."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(prob, dtype=np.float64).ravel()
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    last = np.r_[np.nonzero(np.diff(p))[0], len(p) - 1]
    return y, last + 1, np.cumsum(y)[last]


def roc_curve(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    y, called, tps = _ranked(y_true, prob)
    fps = called - tps
    positives, negatives = max(y.sum(), 1), max((~y).sum(), 1)
    return np.r_[0.0, fps / negatives], np.r_[0.0, tps / positives]


def roc_auc(y_true: np.ndarray, prob: np.ndarray) -> float:
    y = np.asarray(y_true).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr = roc_curve(y, prob)
    return float(np.trapezoid(tpr, fpr))


def binary_metrics(
    y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    (tn, fp), (fn, tp) = confusion(y_true, prob, threshold)
    total = tn + fp + fn + tp
    return {
        "accuracy": float((tp + tn) / total) if total else float("nan"),
        "auc": roc_auc(y_true, prob),
        "precision": float(tp / (tp + fp)) if tp + fp else 0.0,
        "recall": float(tp / (tp + fn)) if tp + fn else 0.0,
    }


def pr_curve(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision of "happy" at every distinct threshold, from the strictest."""
    y, called, tps = _ranked(y_true, prob)
    return np.r_[0.0, tps / max(y.sum(), 1)], np.r_[1.0, tps / called]


def average_precision(y_true: np.ndarray, prob: np.ndarray) -> float:
    """The area under the precision-recall curve, as the step sum over recall."""
    recall, precision = pr_curve(y_true, prob)
    return float(np.sum(np.diff(recall) * precision[1:]))


def most_wrong(y_true: np.ndarray, prob: np.ndarray, count: int) -> np.ndarray:
    """Indices of the misclassified images the model was surest of, surest first."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(prob, dtype=np.float64).ravel()
    wrong = np.nonzero((p >= 0.5) != y)[0]
    confidence = np.abs(p[wrong] - 0.5)
    return wrong[np.argsort(-confidence, kind="mergesort")][:count]


def importance(values: list[dict], scores: list[float]) -> dict[str, float]:
    """How much of the objective's spread each hyperparameter explains, in [0, 1]: the
    correlation ratio (eta squared) of the objective grouped by the hyperparameter's
    value, numbers binned into at most four quantile groups. A rough, per-parameter
    estimate that ignores interactions; with few trials it is noisy."""
    y = np.asarray(scores, dtype=float)
    out: dict[str, float] = {}
    if len(y) < 3:
        return out
    total = np.sum((y - y.mean()) ** 2)
    if total == 0:
        return out
    for name in sorted({k for v in values for k in v}):
        column = [v.get(name) for v in values]
        if len({str(c) for c in column}) < 2:
            continue
        groups = _groups(column)
        between = sum(len(idx) * (y[idx].mean() - y.mean()) ** 2 for idx in groups.values())
        out[name] = float(between / total)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _groups(column: list) -> dict[str, list[int]]:
    numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in column)
    if numeric and len(set(column)) > 4:
        edges = np.quantile(np.asarray(column, float), [0.25, 0.5, 0.75])
        keys = [str(int(np.searchsorted(edges, c, side="right"))) for c in column]
    else:
        keys = [str(c) for c in column]
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return groups
