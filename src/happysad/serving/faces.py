"""Faces in a picture: found by a detector, boxed in the picture's own pixels, and cropped
the way a face-crop model's training images were framed.

One code path for training and prediction: a photo folder with `data.faces=detect`
crops each training image's largest face with `crop_box`, and prediction crops every
face it finds the same way. This module travels inside every logged model with
`images.py` and `pyfunc.py` (see model_format.py), so it imports only the packages the
model's requirements install.

Detectors (chosen by measuring, benchmarks/README.md): `mtcnn`, the MTCNN cascade of
the `mtcnn` package (weights inside its wheel, runs on TensorFlow), and `haar`,
OpenCV's frontal-face cascade. Neither downloads anything at run time.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

DETECTORS = ("mtcnn", "haar")
# A picture is scaled down to this long side before detection: detection time grows
# with the pixels, and a face small enough to vanish at this scale is too small to
# classify anyway. Boxes are scaled back to the picture's own pixels.
DETECT_SIDE = 1024
# The smallest face (box side, in pixels at the detection scale) MTCNN looks for. Haar
# keeps its earlier setting, a tenth of the picture's short side at least, which holds
# its false detections down and misses small faces (benchmarks/README.md).
MIN_DETECT = 20
# MTCNN's last stage (ONet) scores below this are dropped: the package's own default.
# 0.9 was measured against it: one false box fewer in 60 face-free pictures, two real
# faces fewer in 534, and the false boxes left scored 0.95 and more (benchmarks/README.md).
MTCNN_THRESHOLD = 0.8
# The training loader decodes images in threads: a detector is built once, and used by
# one thread at a time (each already runs on every core; OpenCV's cascade is not
# documented as safe to share, and importing cv2 from two threads at once can hand one
# of them a half-initialised module).
_LOCK = threading.RLock()


@dataclass(frozen=True)
class Face:
    """A face's box in the picture's pixels (upright, EXIF orientation applied)."""

    x: int
    y: int
    width: int
    height: int
    score: float = 1.0

    @property
    def side(self) -> int:
        return min(self.width, self.height)


def find_faces(image: Image.Image, detector: str) -> list[Face]:
    """Every face in the picture, largest first."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown face detector '{detector}': use one of {', '.join(DETECTORS)}")
    scale = min(1.0, DETECT_SIDE / max(image.size))
    small = image
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(size, Image.BILINEAR, reducing_gap=2.0)
    with _LOCK:
        found = _mtcnn(small) if detector == "mtcnn" else _haar(small)
    faces = []
    for x, y, w, h, score in found:
        left, top = max(0, round(x / scale)), max(0, round(y / scale))
        right = min(image.width, round((x + w) / scale))
        bottom = min(image.height, round((y + h) / scale))
        if right > left and bottom > top:
            faces.append(Face(left, top, right - left, bottom - top, float(score)))
    return sorted(faces, key=lambda f: f.width * f.height, reverse=True)


def crop_box(face: Face, margin: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom) around a face, grown by `margin` of its side
    on every side, and moved (never squeezed) to stay inside a picture of `size`."""
    width, height = size
    side = min(int(max(face.width, face.height) * (1 + 2 * margin)), width, height)
    left = int(np.clip(round(face.x + face.width / 2 - side / 2), 0, width - side))
    top = int(np.clip(round(face.y + face.height / 2 - side / 2), 0, height - side))
    return left, top, left + side, top + side


def _mtcnn(image: Image.Image) -> list[tuple[float, float, float, float, float]]:
    rgb = np.asarray(image.convert("RGB"))
    if min(rgb.shape[:2]) < MIN_DETECT:
        return []
    found = _mtcnn_detector().detect_faces(
        rgb, min_face_size=MIN_DETECT, threshold_onet=MTCNN_THRESHOLD, box_format="xywh"
    )
    return [(*f["box"], f["confidence"]) for f in found]


@functools.lru_cache(maxsize=1)
def _mtcnn_detector():
    import logging

    import tensorflow as tf
    from mtcnn import MTCNN

    # The package logs its own start-up at INFO; the caller's output should stay its own.
    logging.getLogger("mtcnn").setLevel(logging.WARNING)
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    return MTCNN(stages="face_and_landmarks_detection", device=device)


def _haar(image: Image.Image) -> list[tuple[float, float, float, float, float]]:
    gray = np.asarray(image.convert("L"))
    smallest = max(MIN_DETECT, min(gray.shape) // 10)
    if min(gray.shape) < smallest:
        return []
    found = _haar_detector().detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest)
    )
    return [(x, y, w, h, 1.0) for x, y, w, h in found]


@functools.lru_cache(maxsize=1)
def _haar_detector():
    import cv2

    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    detector = cv2.CascadeClassifier(path)
    if detector.empty():
        raise RuntimeError(f"OpenCV's frontal-face cascade did not load from {path}")
    return detector
