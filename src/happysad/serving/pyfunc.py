"""A happysad model as MLflow serves it: pictures in, one row per face out.

This module, `images.py` and `faces.py` travel inside every logged model (as the
package `happysad_pyfunc`, in the model's `code/` folder), so `mlflow models serve`
and `mlflow.pyfunc.load_model` prepare pictures exactly as in training, with nothing
of happysad installed. Keep it to relative imports and to what the model's
requirements install (Keras, numpy, Pillow, pandas, the face detector's package).

A model trained on face crops (`data.faces=crops` or `detect`) finds the faces in each
picture and classifies each one; a picture small enough to be a face crop itself is
classified whole. A model trained on whole pictures (`data.faces=whole`) classifies
the picture whole. Every row says which input it answers (`input`, from 0), which face
(`face`, from 1, largest first; empty when the row is the whole picture), the box in
the picture's pixels, the label, P(happy) and an error; a missing value is None (null in
JSON), never NaN.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from typing import Any

import numpy as np

from .faces import find_faces
from .images import Preprocessing, Unusable, open_picture

SETTINGS_FILE = "happysad.json"
KERAS_FILE = "model.keras"
BATCH = 256
COLUMNS = ["input", "face", "x", "y", "width", "height", "label", "probability", "error"]
# params: which faces of a picture get a row, and what a picture with no face gets.
FACES = ("all", "largest")
NO_FACE = ("say", "whole")
# A picture no larger than this many times the model's input side is taken as a face
# crop (FER2013's and CK+'s 48x48 images): too small for a detector, classified whole.
CROP_SIDE = 2
# A face whose box side is under this many pixels (of the picture) is too small to
# classify; larger faces are cropped and scaled to the model's input side, however
# small. The setting is the model's (data.min_face); this is the default for models
# saved before it: on FER2013's test crops shrunk to s pixels, accuracy is at chance
# (the majority class's share) at 6 pixels and above it from 8 (benchmarks/README.md).
MIN_FACE = 8


class ImageClassifier:
    """Keras model + the preprocessing it was trained with."""

    def __init__(self, keras_model: Any, settings: dict[str, Any]):
        self.model = keras_model
        self.preprocessing = Preprocessing.from_dict(settings["preprocessing"])
        self.class_names = settings["class_names"]  # index 1 is the positive class: happy
        self.max_pixels = settings.get("max_pixels", 40_000_000)
        self.min_face = int(settings.get("min_face", MIN_FACE))

    def read(self, data: bytes | str):
        """One picture from its file bytes (or their base64 text), and the factor from
        its pixels to the file's (a huge JPEG is decoded at a fraction of its size)."""
        if isinstance(data, str):
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError) as err:
                raise Unusable("a text value that is not base64-encoded image bytes") from err
        if not data:
            raise Unusable("empty file")
        return open_picture(io.BytesIO(data), self.max_pixels)

    def locate(
        self, image: Any, faces: str, no_face: str, factor: float = 1.0
    ) -> list[tuple[dict, Any]]:
        """The rows of one picture, each with the array to classify (None: nothing to).
        Boxes are in the file's pixels: the picture's times `factor`."""
        prep = self.preprocessing
        width, height = image.size
        whole = {"face": None, "x": 0, "y": 0, **_scaled(factor, width=width, height=height)}
        if not prep.finds_faces or max(width, height) <= CROP_SIDE * prep.image_size:
            return [(whole, prep.whole(image))]
        found = find_faces(image, prep.face_detector)
        # A picture whose faces are all too small is classified whole when asked, as
        # one with no face is: it never ends with no label at all.
        if no_face == "whole" and all(face.side < self.min_face for face in found):
            return [(whole, prep.whole(image))]
        if not found:
            return [({"error": "no face found"}, None)]
        rows = []
        for number, face in enumerate(found[:1] if faces == "largest" else found, start=1):
            box = _scaled(factor, x=face.x, y=face.y, width=face.width, height=face.height)
            row = {"face": number, **box}
            if face.side < self.min_face:
                row["error"] = (
                    f"face too small to classify: {face.width}x{face.height} pixels, "
                    f"under {self.min_face}"
                )
                rows.append((row, None))
            else:
                rows.append((row, prep.crop(image, face)))
        return rows

    def classify(
        self, images: list[bytes | str], faces: str = "all", no_face: str = "say"
    ) -> list[dict[str, Any]]:
        """One row per face (or per picture) of each image, in input order."""
        if faces not in FACES or no_face not in NO_FACE:
            raise ValueError(
                f"faces={faces!r}, no_face={no_face!r}: faces is one of {FACES}, no_face one of {NO_FACE}"
            )
        rows: list[dict[str, Any]] = []
        arrays, where = [], []
        for i, data in enumerate(images):
            try:
                image, factor = self.read(data)
                located = self.locate(image, faces, no_face, factor)
            except Unusable as err:
                located = [({"error": str(err)}, None)]
            except Exception as err:  # noqa: BLE001 - one odd picture must not fail the others
                located = [
                    (
                        {"error": f"could not be searched for faces ({type(err).__name__}: {err})"},
                        None,
                    )
                ]
            for found, array in located:
                row = dict.fromkeys(COLUMNS)
                row.update(found, input=i)
                if array is not None:
                    arrays.append(array)
                    where.append(len(rows))
                rows.append(row)
        if arrays:
            for i, p in zip(where, probabilities(self.model, np.stack(arrays)), strict=True):
                rows[i]["label"] = self.class_names[1] if p >= 0.5 else self.class_names[0]
                rows[i]["probability"] = float(p)
        return rows

    def predict(self, model_input: Any, params: dict[str, Any] | None = None):
        """pyfunc: a DataFrame (or dict, or list) of images in the column `image`; params
        `faces` (all | largest) and `no_face` (say | whole)."""
        import pandas as pd

        if isinstance(model_input, pd.DataFrame | dict):
            images = list(model_input["image"])
        else:
            images = list(model_input)
        params = params or {}
        rows = self.classify(
            images, faces=params.get("faces") or "all", no_face=params.get("no_face") or "say"
        )
        # object columns keep None as None: a float column would turn it into NaN, which
        # the scoring server writes as the bare word NaN that strict JSON parsers refuse.
        return pd.DataFrame(rows, columns=COLUMNS, dtype=object)


def _scaled(factor: float, **values: int) -> dict[str, int]:
    return {k: round(v * factor) for k, v in values.items()}


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
