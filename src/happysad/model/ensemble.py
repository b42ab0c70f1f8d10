"""An ensemble of a sweep's trained models, as one plain Keras model.

Members are chosen by greedy ensemble selection with replacement (Caruana et al.,
"Ensemble selection from libraries of models", ICML 2004): start empty and, K times,
add the model (again, if it is already in) whose addition makes the averaged
validation prediction best; a model chosen n times of K weighs n/K. The measure is the
validation log loss, which, unlike accuracy, tells apart two averages that classify
the same images alike.

The ensemble is a Keras model of plain layers only: each member (with its own
test-time flip, if it was trained with one) is a nested model whose P(happy) is
scaled by its weight, and the weighted probabilities are added. It loads in safe
mode with Keras alone, and the same python_function flavour serves it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] for the log loss


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, EPSILON, 1 - EPSILON)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def select(probabilities: list[np.ndarray], y: np.ndarray, k: int) -> list[int]:
    """How many times each model is chosen in `k` steps of greedy selection with
    replacement on (`probabilities` per model, labels `y`). Ties go to the earlier
    model (pass them best first)."""
    y = np.asarray(y, dtype="float64").reshape(-1)
    counts = [0] * len(probabilities)
    total = np.zeros_like(y)
    for step in range(1, k + 1):
        losses = [
            log_loss(y, (total + np.asarray(p, "float64").reshape(-1)) / step)
            for p in probabilities
        ]
        chosen = int(np.argmin(losses))  # the first of equals
        counts[chosen] += 1
        total += np.asarray(probabilities[chosen], "float64").reshape(-1)
    return counts


def combine(members: list[Any], weights: list[float]) -> Any:
    """One Keras model whose output is the weighted sum of the members' outputs."""
    import keras
    from keras import layers

    first = members[0]
    inputs = keras.Input(shape=first.input_shape[1:], dtype=first.inputs[0].dtype, name="image")
    outputs = []
    for i, (member, weight) in enumerate(zip(members, weights, strict=True)):
        member.name = f"member_{i}"  # nested models need names of their own
        scaled = layers.Rescaling(float(weight), name=f"weight_{i}")(member(inputs))
        outputs.append(scaled)
    output = outputs[0] if len(outputs) == 1 else layers.Add(name="ensemble")(outputs)
    return keras.Model(inputs, output, name="ensemble")
