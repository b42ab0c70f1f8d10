"""Binary classification metrics from labels and P(happy), in plain numpy."""

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


def roc_curve(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(prob, dtype=np.float64).ravel()
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    # One point per distinct score, so tied scores form a diagonal segment.
    last = np.r_[np.nonzero(np.diff(p))[0], len(p) - 1]
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
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
