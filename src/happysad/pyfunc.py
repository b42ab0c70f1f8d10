"""A happysad model as MLflow serves it: image file bytes in, label and P(happy) out.

This module and `images.py` travel inside every logged model (as the package
`happysad_pyfunc`, in the model's `code/` folder), so `mlflow models serve` and
`mlflow.pyfunc.load_model` prepare images exactly as in training, with nothing of
happysad installed. Keep it to relative imports of `images` and to what the model's
requirements install (Keras, numpy, Pillow, pandas).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from typing import Any

import numpy as np

from .images import Preprocessing, Unusable, open_image

SETTINGS_FILE = "happysad.json"
KERAS_FILE = "model.keras"
BATCH = 256


class ImageClassifier:
    """Keras model + the preprocessing it was trained with."""

    def __init__(self, keras_model: Any, settings: dict[str, Any]):
        self.model = keras_model
        self.preprocessing = Preprocessing.from_dict(settings["preprocessing"])
        self.class_names = settings["class_names"]  # index 1 is the positive class: happy
        self.max_pixels = settings.get("max_pixels", 40_000_000)

    def prepare(self, data: bytes | str) -> np.ndarray:
        """One image's file bytes (or their base64 text) as the model's input array."""
        if isinstance(data, str):
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as err:
                raise Unusable("a text value that is not base64-encoded image bytes") from err
        if not data:
            raise Unusable("empty file")
        image = open_image(io.BytesIO(data), self.max_pixels)
        # A photo where face_crop finds no face is still answered, on the whole image.
        return self.preprocessing.apply(image, keep_without_face=True)

    def classify(self, images: list[bytes | str]) -> list[dict[str, Any]]:
        """label, probability (of happy) and error per image; unreadable ones get only an error."""
        rows: list[dict[str, Any]] = [
            {"label": None, "probability": None, "error": None} for _ in images
        ]
        arrays, where = [], []
        for i, data in enumerate(images):
            try:
                arrays.append(self.prepare(data))
                where.append(i)
            except Unusable as err:
                rows[i]["error"] = str(err)
        if arrays:
            for i, p in zip(where, probabilities(self.model, np.stack(arrays)), strict=True):
                rows[i]["label"] = self.class_names[1] if p >= 0.5 else self.class_names[0]
                rows[i]["probability"] = float(p)
        return rows

    def predict(self, model_input: Any, params: dict[str, Any] | None = None):
        """pyfunc: a DataFrame (or dict, or list) of images in the column `image`."""
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            images = list(model_input["image"])
        elif isinstance(model_input, dict):
            images = list(model_input["image"])
        else:
            images = list(model_input)
        return pd.DataFrame(self.classify(images), columns=["label", "probability", "error"])


def probabilities(model: Any, arrays: np.ndarray) -> np.ndarray:
    """P(happy) per image of a uint8 batch. The model is called directly, batch by
    batch: model.predict() would trace a new function for every model it meets."""
    out = [
        np.asarray(model(arrays[i : i + BATCH], training=False))
        for i in range(0, len(arrays), BATCH)
    ]
    return np.concatenate(out).ravel() if out else np.zeros(0, np.float32)


def load(model_dir: str) -> ImageClassifier:
    """The classifier of a saved happysad model's data folder."""
    import keras

    with open(os.path.join(model_dir, SETTINGS_FILE)) as f:
        settings = json.load(f)
    return ImageClassifier(
        keras.saving.load_model(os.path.join(model_dir, KERAS_FILE), compile=False), settings
    )


def _load_pyfunc(data_path: str) -> ImageClassifier:
    """MLflow's entry point for the python_function flavor."""
    return load(data_path)
