"""Greedy ensemble selection (Caruana et al. 2004) and the model that averages."""

from __future__ import annotations

import numpy as np

from happysad.model.ensemble import combine, log_loss, select


def test_selection_adds_with_replacement_the_model_that_most_improves_the_mean():
    y = np.array([1, 0, 1, 0])
    right_on_two = np.array([0.9, 0.1, 0.5, 0.5])  # sure of the first two, unsure after
    right_on_others = np.array([0.5, 0.5, 0.9, 0.1])
    wrong = np.array([0.1, 0.9, 0.1, 0.9])
    counts = select([right_on_two, right_on_others, wrong], y, 4)
    assert counts == [2, 2, 0]  # each alone is worse than the two together
    mean = (2 * right_on_two + 2 * right_on_others) / 4
    assert log_loss(y, mean) < min(log_loss(y, right_on_two), log_loss(y, right_on_others))
    # One model better than any mix: chosen every time.
    assert select([y * 0.98 + 0.01, right_on_two], y, 3) == [3, 0]


def test_the_ensemble_is_the_weighted_mean_of_its_members():
    import keras

    def member(seed: int):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((6, 6, 1), dtype="uint8")
        x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))

    a, b = member(1), member(2)
    x = np.random.default_rng(0).integers(0, 256, (7, 6, 6, 1), dtype="uint8")
    expected = 0.75 * a(x).numpy() + 0.25 * b(x).numpy()
    ensemble = combine([a, b], [0.75, 0.25])
    assert np.abs(ensemble(x).numpy() - expected).max() < 1e-6
