"""The model card of a registered version: what the model is, what it was trained and
judged on, how it scored (with standard errors), what it was compared with at the gate,
its exported formats, and where it should not be used. `promote` writes it as
`model_card.md` on the version's run and as the version's description."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from happysad.results.evaluation import confusion, roc_auc
from happysad.tracking import names
from happysad.tracking.exports import logged_exports
from happysad.tracking.store import Store

CARD = "model_card.md"
HYPERPARAMETER_PREFIXES = ("model.", "optimizer.", "augmentation.", "data.batch_size")


@dataclass
class Gate:
    """What the version was compared with at promotion."""

    metric: str
    promoted: bool
    reason: str
    champion_version: str | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)


def standard_error(share: float, n: int) -> float:
    """Of a proportion measured on n images (binomial)."""
    return math.sqrt(share * (1 - share) / n) if n else float("nan")


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC."""
    if not positives or not negatives or math.isnan(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def test_rows(y: np.ndarray, prob: np.ndarray, class_names: tuple[str, str]) -> list[tuple]:
    """(metric, value, standard error, images) on the test split, per-class recall too."""
    (tn, fp), (fn, tp) = confusion(y, prob)
    n, positives, negatives = len(y), int(tp + fn), int(tn + fp)
    accuracy = (tp + tn) / n if n else float("nan")
    auc = roc_auc(y, prob)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    rows = [
        ("accuracy", accuracy, standard_error(accuracy, n), n),
        ("AUC", auc, auc_standard_error(auc, positives, negatives), n),
        ("precision (happy)", precision, standard_error(precision, int(tp + fp)), int(tp + fp)),
    ]
    for name, hits, total in ((class_names[0], tn, negatives), (class_names[1], tp, positives)):
        recall = hits / total if total else float("nan")
        rows.append((f"recall of {name}", recall, standard_error(recall, total), total))
    return rows


# Layers that act only in training, or only prepare the input: not the architecture.
PASSIVE = ("InputLayer", "Rescaling", "Dropout", "SpatialDropout2D", "Permute")


def architecture(model: Any) -> str:
    """The network's computing layers in order, one phrase each; a model wrapped for
    test-time flip (a nested network) is described by that network."""
    inner = [layer for layer in model.layers if getattr(layer, "layers", None)]
    network = max(inner, key=lambda m: m.count_params()) if inner else model
    out = []
    for layer in network.layers:
        kind = type(layer).__name__
        config = layer.get_config()
        if kind in PASSIVE or kind.startswith("Random"):
            continue
        if "filters" in config:
            kernel = "x".join(str(k) for k in config.get("kernel_size", ()))
            out.append(f"{kind} {config['filters']}x{kernel}")
        elif "units" in config:
            out.append(f"Dense {config['units']} ({config.get('activation')})")
        else:
            out.append(kind)
    text = ", ".join(out)
    if network is not model:
        text += "; its answer is the mean of the network on the face and on its mirror image"
    return text


def _best_epoch_metric(store: Store, run: Any, key: str) -> float | None:
    history = store.client.get_metric_history(run.info.run_id, key)
    if not history:
        return None
    best = run.data.metrics.get("best_epoch")
    at = [m for m in history if best is not None and m.step == int(best)]
    return (at or sorted(history, key=lambda m: m.step))[-1].value


def _table(rows: list[tuple]) -> list[str]:
    out = ["| metric | value | standard error | images |", "|---|---|---|---|"]
    out += [f"| {m} | {v:.4f} | {se:.4f} | {n} |" for m, v, se, n in rows]
    return out


def build(
    store: Store,
    model_name: str,
    version: str,
    run_id: str,
    model: Any,
    test_y: np.ndarray,
    test_prob: np.ndarray,
    gate: Gate,
) -> str:
    """The card's Markdown, from the version's run, its sweep's run and the model."""
    trial = store.run(run_id)
    sweep = store.run(trial.data.tags[names.PARENT_RUN_ID])
    summary = json.loads(store.read_text(sweep.info.run_id, "data/summary.json"))
    digest = sweep.data.tags.get(names.DATA_DIGEST, summary.get("digest", "?"))
    classes = ("sad", "happy")
    size, mode = summary.get("image_size"), summary.get("color_mode", "grayscale")
    faces, detector = summary.get("faces", "whole"), summary.get("face_detector", "mtcnn")
    finder = f"{detector} (data.faces={faces})" if faces != "whole" else "none: whole pictures"
    hyper = {
        k: v for k, v in sorted(trial.data.params.items()) if k.startswith(HYPERPARAMETER_PREFIXES)
    }
    lines = [
        f"# Model card: {model_name} version {version}",
        "",
        f"Trial `{trial.info.run_name}` (run `{run_id}`) of sweep "
        f"`{sweep.data.tags.get(names.SWEEP, sweep.info.run_name)}` (run `{sweep.info.run_id}`).",
        "",
        "## The model",
        f"- A convolutional network with {model.count_params():,} parameters: "
        + architecture(model)
        + ".",
        f"- Input: uint8 pixels, {size}x{size} {mode} (shape {tuple(model.input_shape)}), "
        "rescaled to 0-1 inside the model; output: P(happy), happy when >= 0.5.",
        f"- Face detector at prediction: {finder}.",
        "- Hyperparameters: " + ", ".join(f"`{k}={v}`" for k, v in hyper.items()) + ".",
        "",
        "## Data",
        f"- `{summary.get('name')}` ({summary.get('path')}), digest `{digest}` (of the decoded "
        "pixels and labels of every split).",
    ]
    for split, use in (
        ("train", "training"),
        ("val", "the choice of epochs and of the trial (selection)"),
        (
            "test",
            "held out: never used for training or selection; evaluated at the "
            "sweep's end and at promotion",
        ),
    ):
        counts = ", ".join(f"{summary.get(f'{split}_{c}', 0)} {c}" for c in classes)
        lines.append(f"- {split}: {summary.get(f'{split}_images', 0)} images ({counts}), {use}.")
    n_val = int(summary.get("val_images", 0))
    val_happy, val_sad = int(summary.get("val_happy", 0)), int(summary.get("val_sad", 0))
    val_rows = []
    for key, label in (("val_accuracy", "accuracy"), ("val_auc", "AUC")):
        value = _best_epoch_metric(store, trial, key)
        if value is not None:
            if key == "val_accuracy":
                se = standard_error(value, n_val)
            else:
                se = auc_standard_error(value, val_happy, val_sad)
            val_rows.append((label, value, se, n_val))
    lines += ["", "## Metrics", "", "Validation (the trial's best epoch):", "", *_table(val_rows)]
    lines += ["", "Test (the held-out split, at promotion):", ""]
    lines += _table(test_rows(test_y, test_prob, classes))
    lines += ["", "## The gate", ""]
    if gate.champion_version is None:
        lines.append(f"- No champion to compare with: {gate.reason}.")
    else:
        theirs = ", ".join(f"{k} {v:.4f}" for k, v in gate.champion_metrics.items())
        lines.append(
            f"- Compared on this test split with version {gate.champion_version} "
            f"(the champion then: {theirs}) on test {gate.metric}: {gate.reason}."
        )
    lines.append(f"- {'Promoted: alias champion.' if gate.promoted else 'Not promoted.'}")
    lines += ["", "## Exported formats", ""]
    exports = logged_exports(store, run_id)
    if not exports:
        lines.append("- None (python -m happysad.export, or promote.exports=[...]).")
    for c in exports:
        lines.append(
            f"- `export/model-{c['name']}`: agrees with the Keras model on "
            f"{c['agreement']:.2%} of {c['images']} test decisions, AUC {c['auc']:.4f} "
            f"(Keras {c['keras_auc']:.4f}), {c['size_bytes'] / 1024:.0f} KiB, "
            f"{c['latency_ms']:.2f} ms an image."
        )
    lines += [
        "",
        "## Intended use and known limits",
        "",
        f"- Tells a happy face from a sad one in {size}x{size} {mode} face crops; the labels "
        "are `happy` and `sad` only: a neutral, angry or surprised face still gets one of them.",
        f"- Judged on `{summary.get('name')}` only: accuracy on other faces (age, ethnicity, "
        "lighting, pose, occlusion, image quality) is not measured here and may be lower.",
        "- A facial expression is not a feeling: not for decisions about people (hiring, "
        "policing, health, education), nor for surveillance.",
        "- Faces the detector misses, or too small to classify, get no label unless the "
        "whole picture is classified instead (`--no-face whole`).",
    ]
    if summary.get("name") == "synthetic":
        lines.append(
            "- Trained on procedurally drawn faces: a demonstration, not a model of people."
        )
    return "\n".join(lines) + "\n"
