"""The embedded default data: procedurally drawn happy and sad faces.

Each face is drawn at four times the target size and reduced, so edges are
anti-aliased like a photograph's. "Happy" and "sad" show most in the mouth's
curvature and, more weakly, in the eyebrows (inner ends raised when sad) and the
eyes (narrowed from below by a smile, drooping at the outer corners when sad).
Around that signal is the variation a real face crop has: position, scale,
rotation, face shape, skin tone, directional light, a cluttered background,
hair and glasses in the way, blur, sensor noise and JPEG artefacts, and a share
of nearly neutral faces that are hard for anyone.

The images are a pure function of (seed, settings): `generate` writes them once
as PNG files under happy/ and sad/ of a folder named by their digest, and every
later run reads that folder with the same loader as a folder of photos.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Bump when the drawing changes, so that old caches are not reused.
GENERATOR_VERSION = 1
SUPERSAMPLE = 4
MANIFEST = "synthetic.json"


@dataclass(frozen=True)
class SyntheticSpec:
    num_images: int
    image_size: int
    seed: int
    hard_fraction: float

    def digest(self) -> str:
        text = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def generate(spec: SyntheticSpec, cache_dir: str | Path) -> Path:
    """Write the set once into `<cache_dir>/synthetic/<digest>/` and return that folder.

    A complete folder (it has its manifest) is reused as it is. The images are
    drawn into a temporary folder first and moved into place at the end, so an
    interrupted run never leaves a half-written set behind to be reused.
    """
    root = Path(cache_dir) / "synthetic"
    target = root / spec.digest()
    if (target / MANIFEST).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{spec.digest()}-", dir=root))
    try:
        for label in ("happy", "sad"):
            (work / label).mkdir()
        _draw_all(spec, work)
        manifest = {"generator_version": GENERATOR_VERSION, **asdict(spec)}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.replace(work, target)
        except OSError:
            # Another process finished the same set first; theirs is identical.
            if not (target / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _draw_range(spec: SyntheticSpec, folder: Path, start: int, stop: int) -> None:
    for index in range(start, stop):
        label, image = draw_face(spec, index)
        image.save(folder / label / f"face_{index:05d}.png")


def _draw_all(spec: SyntheticSpec, folder: Path) -> None:
    """Draw on every core. Threads, not processes: Pillow and numpy release the GIL in
    the heavy steps, and threads are safe in a process that already runs TensorFlow."""
    workers = min(os.cpu_count() or 1, 8)
    bounds = np.linspace(0, spec.num_images, workers * 4 + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        jobs = [
            pool.submit(_draw_range, spec, folder, a, b)
            for a, b in zip(bounds, bounds[1:], strict=False)
        ]
        for job in jobs:
            job.result()


def draw_face(spec: SyntheticSpec, index: int) -> tuple[str, Image.Image]:
    """The `index`-th face of the set: its label and a grayscale image."""
    rng = np.random.default_rng([spec.seed, index, GENERATOR_VERSION])
    happy = index % 2 == 0
    hard = rng.random() < spec.hard_fraction
    # Expression strength in [-1, 1], positive for happy; hard faces are nearly flat.
    strength = rng.uniform(0.0, 0.12) if hard else rng.uniform(0.3, 1.0)
    expression = strength if happy else -strength

    size = spec.image_size * SUPERSAMPLE
    canvas = _background(rng, size)
    face, mask = _face_layer(rng, size, expression, _background_level(canvas))
    canvas.paste(face, (0, 0), mask)
    image = canvas.reduce(SUPERSAMPLE)
    image = _camera(rng, image)
    return ("happy" if happy else "sad"), image


# --- drawing -------------------------------------------------------------------------


def _gray(value: float) -> int:
    return min(255, max(0, round(value)))


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates of a size x size canvas."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    level = rng.uniform(25, 230)
    yy, xx = _grid(size)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (
        (xx / size - 0.5) * math.cos(angle) + (yy / size - 0.5) * math.sin(angle)
    ) * rng.uniform(0, 90)
    bg = Image.fromarray(np.clip(level + ramp, 0, 255).astype(np.uint8), "L")
    draw = ImageDraw.Draw(bg)
    # Clutter: furniture edges, posters, windows, other heads out of focus.
    for _ in range(rng.poisson(5)):
        kind = rng.integers(0, 3)
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.1, 0.7, 2) * size
        fill = _gray(rng.uniform(0, 255))
        if kind == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=fill)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=fill, width=int(rng.uniform(2, 0.06 * size)))
    return bg.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 6.0)))


def _background_level(bg: Image.Image) -> float:
    return float(np.asarray(bg).mean())


def _face_layer(
    rng: np.random.Generator, size: int, expression: float, bg_level: float
) -> tuple[Image.Image, Image.Image]:
    """The head on a transparent layer: (gray image, alpha mask), rotated and lit."""
    face = Image.new("L", (size, size), 0)
    mask = Image.new("L", (size, size), 0)
    draw, dmask = ImageDraw.Draw(face), ImageDraw.Draw(mask)

    cx = size * (0.5 + rng.uniform(-0.09, 0.09))
    cy = size * (0.52 + rng.uniform(-0.08, 0.08))
    rx = size * rng.uniform(0.3, 0.4)
    ry = rx * rng.uniform(1.1, 1.35)
    skin = rng.uniform(70, 225)
    if abs(skin - bg_level) < 20:
        skin = skin + 40 if skin < 150 else skin - 40
    hair = rng.uniform(10, 90) if rng.random() < 0.8 else rng.uniform(150, 230)
    line = max(2, int(rx * 0.04))

    def shape(box: list[float], fill: float, kind: str = "ellipse") -> None:
        getattr(draw, kind)(box, fill=_gray(fill))
        getattr(dmask, kind)(box, fill=255)

    # Neck and shoulders, then hair behind the head, then the head.
    shape([cx - rx * 0.45, cy + ry * 0.6, cx + rx * 0.45, size * 1.1], skin * 0.85, "rectangle")
    shape([cx - rx * 1.7, cy + ry * 1.15, cx + rx * 1.7, size * 1.6], rng.uniform(20, 230))
    has_hair = rng.random() < 0.7
    if has_hair:
        long_hair = rng.uniform(0.0, 0.9)
        shape([cx - rx * 1.12, cy - ry * 1.15, cx + rx * 1.12, cy + ry * long_hair], hair)
    for side in (-1, 1):  # ears
        ex = cx + side * rx * 0.98
        shape([ex - rx * 0.12, cy - ry * 0.12, ex + rx * 0.12, cy + ry * 0.2], skin * 0.95)
    shape([cx - rx, cy - ry, cx + rx, cy + ry], skin)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], outline=_gray(skin * 0.8), width=line)
    if has_hair and rng.random() < 0.5:  # a fringe over the forehead
        fringe = cy - ry * rng.uniform(0.25, 0.6)
        draw.chord(
            [cx - rx * 1.02, cy - ry * 1.1, cx + rx * 1.02, fringe + ry * 0.3],
            180,
            360,
            fill=_gray(hair),
        )

    _eyes_and_brows(rng, draw, cx, cy, rx, ry, skin, hair, expression)
    # Nose: a shadow line and nostrils.
    ny = cy + ry * rng.uniform(0.12, 0.22)
    draw.line([cx, cy - ry * 0.05, cx + rx * 0.05, ny], fill=_gray(skin * 0.78), width=line)
    draw.arc(
        [cx - rx * 0.14, ny - rx * 0.06, cx + rx * 0.14, ny + rx * 0.06],
        20,
        160,
        fill=_gray(skin * 0.6),
        width=line,
    )
    _mouth(rng, draw, cx, cy, rx, ry, skin, expression)
    _occluders(rng, draw, dmask, cx, cy, rx, ry)

    # Light from one side: a ramp across the head.
    arr = np.asarray(face, dtype=np.float32)
    yy, xx = _grid(size)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)) / rx
    arr = arr * (1.0 + rng.uniform(0.0, 0.35) * ramp)
    face = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")

    # Rotate the head and its mask in one pass; bilinear is enough before the 4x reduction.
    tilt = float(np.clip(rng.normal(0, 9), -25, 25))
    both = Image.merge("LA", (face, mask)).rotate(tilt, resample=Image.BILINEAR, center=(cx, cy))
    return both.getchannel("L"), both.getchannel("A")


def _eyes_and_brows(rng, draw, cx, cy, rx, ry, skin, hair, expression) -> None:
    smile, sorrow = max(expression, 0.0), max(-expression, 0.0)
    ey = cy - ry * rng.uniform(0.08, 0.22)
    spread = rx * rng.uniform(0.34, 0.46)
    ew = rx * rng.uniform(0.17, 0.25)
    eh = ew * rng.uniform(0.38, 0.58)
    white = max(skin + 35, 200)
    iris = rng.uniform(10, 80)
    gaze = rng.normal(0, 0.25, 2)
    # Weak cues: a smile lifts the lower lids, sorrow droops the outer corners and
    # lifts the inner ends of the brows. Noise keeps them from being decisive.
    lift = float(np.clip(0.45 * smile + rng.normal(0, 0.12), 0, 0.7))
    droop = float(np.clip(0.5 * sorrow + rng.normal(0, 0.12), 0, 0.7))
    brow_angle = math.radians(22 * sorrow - 6 * smile + rng.normal(0, 8))
    brow_gap = rx * rng.uniform(0.1, 0.2)
    brow_len = ew * rng.uniform(1.0, 1.4)
    brow_w = max(2, int(rx * rng.uniform(0.035, 0.075)))
    for side in (-1, 1):
        ex = cx + side * spread
        draw.ellipse([ex - ew / 2, ey - eh / 2, ex + ew / 2, ey + eh / 2], fill=_gray(white))
        ir = eh * 0.42
        ix, iy = ex + gaze[0] * ew * 0.25, ey + gaze[1] * eh * 0.15
        draw.ellipse([ix - ir, iy - ir, ix + ir, iy + ir], fill=_gray(iris))
        if lift > 0:  # lower lid pushed up by the cheek
            top = ey + eh / 2 - lift * eh
            draw.chord(
                [ex - ew / 2 - 1, top - eh * 0.1, ex + ew / 2 + 1, ey + eh * 0.9],
                180,
                360,
                fill=_gray(skin),
            )
        if droop > 0:  # upper lid lowered at the outer corner
            outer, inner = ex + side * ew / 2, ex - side * ew * 0.1
            draw.polygon(
                [
                    (outer + side, ey - eh),
                    (inner, ey - eh),
                    (outer + side, ey - eh / 2 + droop * eh * 1.2),
                ],
                fill=_gray(skin),
            )
        draw.arc(
            [ex - ew / 2, ey - eh / 2, ex + ew / 2, ey + eh / 2],
            180,
            360,
            fill=_gray(skin * 0.55),
            width=2,
        )
        # Brow: inner end at (bx_in, by_in); sorrow raises it (negative y is up).
        by = ey - eh / 2 - brow_gap
        inner_x, outer_x = ex - side * brow_len * 0.45, ex + side * brow_len * 0.55
        half_rise = math.sin(brow_angle) * brow_len / 2
        draw.line(
            [(inner_x, by - half_rise), (ex, by - eh * 0.12), (outer_x, by + half_rise)],
            fill=_gray(hair * 0.8 if hair < 120 else 60),
            width=brow_w,
            joint="curve",
        )


def _mouth(rng, draw, cx, cy, rx, ry, skin, expression) -> None:
    my = cy + ry * rng.uniform(0.42, 0.56)
    half = rx * rng.uniform(0.3, 0.5)
    # Depth of the curve at the middle: positive bends down (a smile, corners up).
    bend = expression * half * rng.uniform(0.5, 0.8)
    skew = rng.normal(0, 0.06) * half
    # Lips keep a visible contrast on light and dark skin alike.
    lip = _gray(skin - rng.uniform(45, 100))
    width = max(2, int(rx * rng.uniform(0.04, 0.08)))
    t = np.linspace(-1, 1, 24)
    xs = cx + skew + t * half
    upper = my + bend * (1 - t**2) - expression * half * 0.08
    if rng.random() < 0.3:  # open mouth: a darker gap below the upper lip
        lower = upper + abs(bend) * rng.uniform(0.4, 1.0) * (1 - t**2) + 1
        gap = list(zip(xs, upper, strict=True)) + list(zip(xs[::-1], lower[::-1], strict=True))
        draw.polygon(gap, fill=_gray(rng.uniform(20, 70)))
        draw.line(list(zip(xs, lower, strict=True)), fill=lip, width=width, joint="curve")
    draw.line(list(zip(xs, upper, strict=True)), fill=lip, width=width, joint="curve")


def _occluders(rng, draw, dmask, cx, cy, rx, ry) -> None:
    if rng.random() < 0.25:  # glasses
        ey = cy - ry * 0.15
        r = rx * rng.uniform(0.2, 0.27)
        frame = _gray(rng.uniform(0, 90))
        dark = rng.random() < 0.2
        for side in (-1, 1):
            ex = cx + side * rx * 0.4
            box = [ex - r, ey - r * 0.8, ex + r, ey + r * 0.8]
            if dark:
                draw.ellipse(box, fill=_gray(rng.uniform(10, 50)))
            draw.ellipse(box, outline=frame, width=max(2, int(r * 0.15)))
        draw.line(
            [cx - rx * 0.4 + r, ey, cx + rx * 0.4 - r, ey], fill=frame, width=max(2, int(r * 0.15))
        )
    if rng.random() < 0.06:  # a hand, a cup, a scarf: something in front of the face
        x0 = cx + rng.uniform(-1.2, 0.4) * rx
        y0 = cy + rng.uniform(-0.5, 0.9) * ry
        box = [x0, y0, x0 + rx * rng.uniform(0.4, 0.9), y0 + ry * rng.uniform(0.3, 0.6)]
        draw.ellipse(box, fill=_gray(rng.uniform(30, 230)))
        dmask.ellipse(box, fill=255)


def _camera(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Focus, exposure, sensor noise and compression of a cheap camera."""
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.9)))
    arr = np.asarray(image, dtype=np.float32)
    mean = arr.mean()
    arr = (arr - mean) * rng.uniform(0.65, 1.2) + mean + rng.uniform(-25, 25)
    arr = arr + rng.normal(0, rng.uniform(1.5, 10.0), arr.shape)
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(35, 90)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    return image
