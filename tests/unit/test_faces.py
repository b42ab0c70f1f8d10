"""Finding faces in pictures and classifying each: real detectors on composites of real
faces pasted at known places, the model's python_function flavour with a small Keras
model, and `predict` on a model logged in a throw-away store (no training)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from happysad.serving.faces import find_faces
from happysad.serving.images import Preprocessing
from tests.pictures import FACES, THREE, composite, face_photo, needs_mux, png_bytes


def _near(face, place, tolerance=0.35) -> bool:
    """The box's centre is within `tolerance` of the pasted side of the pasted centre,
    and its size is of the pasted face's order."""
    x, y, side = place
    cx, cy = face.x + face.width / 2, face.y + face.height / 2
    centred = (
        abs(cx - (x + side / 2)) < tolerance * side and abs(cy - (y + side / 2)) < tolerance * side
    )
    return centred and 0.4 * side < max(face.width, face.height) < 1.3 * side


@needs_mux
@pytest.mark.parametrize("detector", ["mtcnn", "haar"])
def test_the_detector_finds_the_faces_where_they_were_pasted(detector):
    assert find_faces(composite([]), detector) == []
    (one,) = find_faces(composite([(300, 150, 200)]), detector)
    assert _near(one, (300, 150, 200))
    found = find_faces(composite(THREE), detector)
    assert len(found) == 3, found
    assert all(any(_near(f, p) for f in found) for p in THREE)
    sides = [f.width * f.height for f in found]
    assert sides == sorted(sides, reverse=True), "largest first"


def _classifier(faces="crops", image_size=48, color_mode="grayscale", min_face=None):
    """The model's flavour around a small Keras model whose P(happy) is the mean
    brightness of the face: each face gets its own answer."""
    import keras

    from happysad.serving.pyfunc import ImageClassifier

    channels = 1 if color_mode == "grayscale" else 3
    model = keras.Sequential(
        [
            keras.Input((image_size, image_size, channels), dtype="uint8"),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    prep = Preprocessing(image_size=image_size, color_mode=color_mode, faces=faces, face_margin=0.0)
    settings = {"preprocessing": prep.to_dict(), "class_names": ["sad", "happy"]}
    if min_face is not None:
        settings["min_face"] = min_face
    return ImageClassifier(model, settings)


@needs_mux
def test_every_face_of_a_picture_gets_a_row_with_its_box_and_label():
    classifier = _classifier()
    pictures = [composite(THREE), composite([]), composite([(300, 150, 200)])]
    small = face_photo(FACES[0], 48)  # a face crop, too small for a detector: classified whole
    rows = classifier.classify(
        [*(png_bytes(p) for p in pictures), png_bytes(small), b"not an image"]
    )
    by_input = {i: [r for r in rows if r["input"] == i] for i in range(5)}
    assert [r["face"] for r in by_input[0]] == [1, 2, 3]
    assert all(any(_near_row(r, p) for r in by_input[0]) for p in THREE)
    assert all(r["label"] in ("happy", "sad") and 0 <= r["probability"] <= 1 for r in by_input[0])
    assert len({round(r["probability"], 6) for r in by_input[0]}) == 3, "each face is classified"
    (none,) = by_input[1]
    assert none["error"] == "no face found" and none["label"] is None and none["x"] is None
    (one,) = by_input[2]
    assert one["face"] == 1 and _near_row(one, (300, 150, 200)) and one["label"]
    (crop,) = by_input[3]
    assert crop["face"] is None and (crop["x"], crop["y"], crop["width"], crop["height"]) == (
        0,
        0,
        48,
        48,
    )
    assert crop["label"] in ("happy", "sad")
    (bad,) = by_input[4]
    assert bad["error"] == "not an image Pillow can read"


def _near_row(row, place) -> bool:
    from happysad.serving.faces import Face

    return _near(Face(row["x"], row["y"], row["width"], row["height"]), place)


@needs_mux
def test_largest_face_no_face_whole_and_too_small_faces():
    classifier = _classifier()
    (largest,) = classifier.classify([png_bytes(composite(THREE))], faces="largest")
    assert largest["face"] == 1 and _near_row(largest, THREE[0])
    (whole,) = classifier.classify([png_bytes(composite([]))], no_face="whole")
    assert whole["face"] is None and (whole["width"], whole["height"]) == (900, 600)
    assert whole["label"] in ("happy", "sad") and whole["error"] is None
    # A model whose data.min_face is 80: a 60-pixel face says so.
    big = _classifier(image_size=160, min_face=80)
    picture = composite([(60, 80, 300)], size=(1400, 900))
    picture.paste(face_photo(FACES[1], 60), (900, 500))
    rows = big.classify([png_bytes(picture)])
    assert rows[0]["label"] in ("happy", "sad")
    tiny = [r for r in rows if r["error"]]
    assert tiny and all(r["error"].startswith("face too small to classify") for r in tiny)
    assert all(r["label"] is None and r["x"] is not None for r in tiny)
    # Only faces too small: said, or (--no-face whole) the whole picture classified.
    only = composite([], size=(1400, 900))
    only.paste(face_photo(FACES[1], 60), (900, 500))
    (said,) = big.classify([png_bytes(only)])
    assert said["error"].startswith("face too small to classify") and said["label"] is None
    (whole,) = big.classify([png_bytes(only)], no_face="whole")
    assert whole["face"] is None and whole["label"] in ("happy", "sad") and not whole["error"]
    assert (whole["width"], whole["height"]) == (1400, 900)
    with pytest.raises(ValueError, match="faces is one of"):
        classifier.classify([], faces="some")


@needs_mux
def test_a_model_of_whole_pictures_gets_them_whole_and_answers_strict_json():
    classifier = _classifier(faces="whole", color_mode="rgb")
    frame = classifier.predict({"image": [png_bytes(composite(THREE)), b""]})
    assert list(frame["face"]) == [None, None] and list(frame["input"]) == [0, 1]
    assert frame["label"][0] in ("happy", "sad") and frame["error"][1] == "empty file"
    # What MLflow's scoring server does with the frame: no NaN, a missing value is null.
    text = json.dumps({"predictions": frame.to_dict(orient="records")})
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}"))
    assert strict["predictions"][0]["error"] is None and strict["predictions"][1]["label"] is None


def test_models_saved_before_faces_were_found_keep_their_preprocessing():
    old = Preprocessing.from_dict({"image_size": 48, "face_crop": "haar", "face_margin": 0.25})
    assert (old.faces, old.face_detector) == ("detect", "haar")
    assert Preprocessing.from_dict({"image_size": 48, "face_crop": "none"}).faces == "whole"


@needs_mux
@pytest.mark.parametrize("detector", ["mtcnn", "haar"])
def test_training_crops_a_photo_the_way_prediction_does(detector):
    """data.faces=detect crops a training photo's largest face with the same detector
    and box as prediction."""
    picture = composite([(300, 150, 200)])
    prep = Preprocessing(image_size=48, faces="detect", face_detector=detector)
    (face,) = find_faces(picture, detector)
    np.testing.assert_array_equal(prep.apply(picture), prep.crop(picture, face))
    assert not np.array_equal(prep.apply(picture), prep.whole(picture))


# --- predict, with a model logged in a throw-away store ------------------------------


@pytest.fixture
def logged_model(tmp_path, store_uri):
    """A small model logged as a sweep logs its models; its URI."""
    from happysad.tracking.models import log_model
    from happysad.tracking.store import Store

    store = Store(store_uri)
    experiment_id = store.open_experiment("models")
    run_id = store.client.create_run(experiment_id).info.run_id
    classifier = _classifier()
    settings = {
        "preprocessing": classifier.preprocessing.to_dict(),
        "class_names": ["sad", "happy"],
        "max_pixels": 40_000_000,
    }
    uri = log_model(
        store, run_id, classifier.model, settings, {"preprocessing": settings["preprocessing"]}
    )
    store.client.set_terminated(run_id)
    return uri


@needs_mux
def test_predict_finds_faces_annotates_and_writes_rows(
    tmp_path, store_uri, logged_model, monkeypatch, capsys
):
    from happysad.predict import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    album = tmp_path / "album"
    album.mkdir()
    composite(THREE).convert("RGB").save(album / "three.jpg", quality=95)
    composite([]).save(album / "none.png")
    face_photo(FACES[0], 48).convert("L").save(album / "crop.png")
    out = tmp_path / "rows.json"
    assert (
        main(
            [
                str(album),
                "--model",
                logged_model,
                "--annotate",
                str(tmp_path / "seen"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert [(Path(r["path"]).name, r["face"]) for r in rows] == [
        ("crop.png", None),
        ("none.png", None),
        ("three.jpg", 1),
        ("three.jpg", 2),
        ("three.jpg", 3),
    ]
    assert rows[1]["error"] == "no face found"
    assert all(
        r["label"] in ("happy", "sad")
        for r in rows
        if r["path"].endswith(("crop.png", "three.jpg"))
    )
    console = capsys.readouterr().out
    assert "face 3 at" in console and "error: no face found" in console

    seen = tmp_path / "seen"
    assert sorted(p.name for p in seen.iterdir()) == ["crop.png", "none.png", "three.jpg"]
    original = np.asarray(Image.open(album / "three.jpg").convert("RGB"), dtype=int)
    annotated = np.asarray(Image.open(seen / "three.jpg").convert("RGB"), dtype=int)
    assert annotated.shape == original.shape
    for r in rows[2:]:  # each box's edge is drawn over the picture
        edge = annotated[r["y"] + r["height"] // 2, r["x"] - 2 : r["x"] + 2]
        before = original[r["y"] + r["height"] // 2, r["x"] - 2 : r["x"] + 2]
        assert np.abs(edge - before).max() > 60

    largest = tmp_path / "largest.csv"
    assert (
        main(
            [
                str(album),
                "--model",
                logged_model,
                "--faces",
                "largest",
                "--no-face",
                "whole",
                "--output",
                str(largest),
            ]
        )
        == 0
    )
    lines = largest.read_text().splitlines()
    # The store given on the command line beats MLFLOW_TRACKING_URI, and is named.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    capsys.readouterr()
    assert (
        main([str(album / "crop.png"), "--model", logged_model, "--tracking-uri", store_uri]) == 0
    )
    assert f"MLflow store: {store_uri}" in capsys.readouterr().err
    assert lines[0] == "path,face,x,y,width,height,label,probability,error"
    assert len(lines) == 4 and all(",happy," in line or ",sad," in line for line in lines[1:])


@needs_mux
def test_a_huge_jpeg_is_decoded_small_and_its_boxes_are_in_its_own_pixels():
    from happysad.serving.images import open_picture

    classifier = _classifier()
    classifier.max_pixels = 300_000  # a 900x600 picture declares 540,000
    picture = composite([(300, 150, 200)])
    jpeg = io.BytesIO()
    picture.save(jpeg, format="JPEG", quality=95)
    image, factor = open_picture(io.BytesIO(jpeg.getvalue()), classifier.max_pixels)
    assert image.size == (450, 300) and factor == 2.0, "decoded at half size by the decoder"
    (row,) = classifier.classify([jpeg.getvalue()])
    assert row["face"] == 1 and _near_row(row, (300, 150, 200)) and row["label"]
    # Other formats have no such decoder: refused, never decoded.
    (png,) = classifier.classify([png_bytes(picture)])
    assert png["error"].startswith("too large: declares 900x600 pixels")
