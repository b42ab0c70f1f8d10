"""Small faces: how small a face can be and still be classified, on FER2013 test crops.

For the best model of a sweep (--sweep NAME, by its parent run's tag
`happysad.best_model_uri`) or --model URI, in the store of MLFLOW_TRACKING_URI, run
through `happysad.serving.pyfunc` as predict runs it:

1. The floor: every FER2013 test crop (867 happy, 625 sad, 48x48) shrunk to a side of
   s pixels (area averaging, as a camera's sensor sees a small face), then prepared as
   the pipeline prepares a face of that size (upscaled to the model's input side):
   accuracy and AUC with their standard errors, by s. The floor is the smallest side
   whose accuracy is still clearly above the majority class's share (happy, 58.1%):
   more than two standard errors above it.
2. Composites: FER2013 test crops pasted (area-averaged) at a side of 12 to 48 px into
   the face-free backgrounds of benchmarks/faces.py (640x480, 3 faces each), then
   `ImageClassifier.classify` with every found face classified (min_face 1): the share
   of pasted faces found (a box's centre inside it and a side 0.3 to 1.5 times its
   side) and found and rightly labelled, by side; false boxes; and, at the chosen
   `min_face`, the pictures left with no label under `no_face="whole"`.

    MLFLOW_TRACKING_URI=... python benchmarks/small_faces.py --sweep NAME [--composites 20]

Record results in benchmarks/README.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from faces import BACKGROUNDS, FER_TEST, _place, background, match  # noqa: E402
from overhead import machine  # noqa: E402
from PIL import Image  # noqa: E402

FLOOR_SIDES = (6, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32, 40, 48)
COMPOSITE_SIDES = (12, 16, 20, 24, 28, 32, 40, 48)


def fer_test() -> tuple[list[Image.Image], np.ndarray]:
    crops, labels = [], []
    for label, name in ((1, "happy"), (0, "sad")):
        for path in sorted((FER_TEST / name).iterdir()):
            crops.append(Image.open(path).convert("L"))
            labels.append(label)
    return crops, np.array(labels, float)


def se(share: float, n: int) -> float:
    return math.sqrt(share * (1 - share) / n)


def floor(classifier, crops, y) -> None:
    from happysad.results.card import auc_standard_error
    from happysad.results.evaluation import roc_auc
    from happysad.serving.pyfunc import probabilities

    prep = classifier.preprocessing
    majority = max(y.mean(), 1 - y.mean())
    print(f"\n1. The floor: {len(y)} FER2013 test crops, majority share {majority:.3f}")
    print("| face side (px) | accuracy | AUC | above the majority share by |")
    print("|---|---|---|---|")
    for side in FLOOR_SIDES:
        arrays = np.stack([prep.whole(c.resize((side, side), Image.BOX)) for c in crops])
        p = probabilities(classifier.model, arrays)
        accuracy = float(np.mean((p >= 0.5) == y))
        auc = roc_auc(y, p)
        auc_se = auc_standard_error(auc, int(y.sum()), int(len(y) - y.sum()))
        margin = (accuracy - majority) / se(accuracy, len(y))
        print(
            f"| {side} | {accuracy:.3f} ± {se(accuracy, len(y)):.3f} | {auc:.3f} ± {auc_se:.3f} "
            f"| {margin:+.1f} SE |"
        )


def composites(classifier, crops, y, count: int, min_face: int) -> None:
    rng = np.random.default_rng(25)
    print(f"\n2. Composites: {count} pictures of 640x480 per side, 3 faces each")
    print("| face side (px) | found | found and rightly labelled | false boxes |")
    print("|---|---|---|---|")
    unlabelled = {"say": 0, "whole": 0}
    pictures = 0
    for side in COMPOSITE_SIDES:
        found = right = false = total = 0
        for k in range(count):
            image = background(rng, BACKGROUNDS[k % len(BACKGROUNDS)], (640, 480))
            pasted = _place(rng, image.size, [side] * 3)
            truth = []
            for x, y0, s in pasted:
                i = int(rng.integers(len(crops)))
                image.paste(crops[i].convert("RGB").resize((s, s), Image.BOX), (x, y0))
                truth.append(y[i])
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            data = buffer.getvalue()
            classifier.min_face = 1
            rows = [r for r in classifier.classify([data], faces="all") if r["face"]]
            boxes = [_face(r) for r in rows]
            hits, wrong = match(boxes, pasted)
            found += sum(hits)
            false += len(wrong)
            total += len(pasted)
            for place, label in zip(pasted, truth, strict=True):
                for row, box in zip(rows, boxes, strict=True):
                    if match([box], [place])[0][0] and row["label"] == (
                        "happy" if label else "sad"
                    ):
                        right += 1
                        break
            classifier.min_face = min_face
            for no_face in unlabelled:
                answer = classifier.classify([data], faces="largest", no_face=no_face)
                unlabelled[no_face] += all(r["label"] is None for r in answer)
            pictures += 1
        print(
            f"| {side} | {found}/{total} ({found / total:.0%}) | {right}/{total} "
            f"({right / total:.0%}) | {false} |"
        )
    print(
        f"\nAt min_face {min_face}: pictures with no label at all, of {pictures}: "
        f"no_face=say {unlabelled['say']}, no_face=whole {unlabelled['whole']}"
    )


def _face(row):
    from happysad.serving.faces import Face

    return Face(row["x"], row["y"], row["width"], row["height"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep")
    parser.add_argument("--model")
    parser.add_argument("--composites", type=int, default=20)
    parser.add_argument("--min-face", type=int, default=None)
    args = parser.parse_args()

    from happysad.serving import pyfunc
    from happysad.tracking.exports import fetch
    from happysad.tracking.store import Store

    store = Store.existing(None)
    uri = args.model
    if uri is None:
        sweep = store.find_sweeps(store.experiment_id("happysad"), args.sweep)[0]
        uri = sweep.data.tags["happysad.best_model_uri"]
    print(machine())
    print(f"model {uri}")
    with tempfile.TemporaryDirectory(prefix="small-faces-") as tmp:
        source = fetch(store, uri, Path(tmp))
        classifier = pyfunc.load(str(source.keras_file.parent))
    crops, y = fer_test()
    floor(classifier, crops, y)
    min_face = args.min_face or classifier.min_face
    composites(classifier, crops, y, args.composites, min_face)


if __name__ == "__main__":
    main()
