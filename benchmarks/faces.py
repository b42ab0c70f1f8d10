"""Face detectors for the photo pipeline: what they find, what they invent, what they cost.

Measures `happysad.serving.faces.find_faces` with each detector (MTCNN at the package's own
last-stage threshold 0.8, which happysad uses, and at 0.9, and OpenCV's Haar cascade),
then the whole `ImageClassifier.classify` path with a FER2013-trained model:

0. Framing (`--parts framing`): how FER2013's 48x48 crops sit around MTCNN's box, the
   measurement behind `face_margin: 0.0` in conf/data/fer2013.yaml. Each of 300
   training faces (fixed seed) is scaled to 192 px and pasted in the middle of a
   384 px grey canvas (so the box is never clipped by the picture's edge); the ratio
   of the crop's side to the box's longer side gives the margin that reproduces the
   crop: (ratio - 1) / 2.

1. Detection on the muxspace face photos (one face each): pictures with a face found,
   pictures with more than one box (the extra boxes are false), median time.
2. Composites made here: muxspace pictures (tight face crops) pasted at known places
   with a face side of about 40, 80 or 160 px into face-free backgrounds drawn here
   (smooth noise, gradients, stripes, checkerboards, random shapes, text), at 640x480,
   1280x960 and 2400x1800, with 0, 1 or 3 faces. A pasted face is found when a box's
   centre lies inside it and the box side is 0.3 to 1.5 times its side; any other box
   is a false detection. Then more face-free backgrounds alone, for false detections
   only (where MTCNN's two thresholds differ). Fixed seed.
3. A contact sheet per detector (muxspace pictures and composites with their boxes)
   and a sheet of its false detections, written under --out (not in the repository).
4. End to end on muxspace, one prediction per picture (`faces="largest"`,
   `no_face="whole"`): accuracy, balanced accuracy and ROC AUC (happy positive) for
   the whole picture, MTCNN crops (face_margin 0.0, 0.1, 0.25) and Haar crops. The
   detector's boxes are memoised per picture here (same pixels, same settings, same
   boxes), so the arms differ only in what they classify.
5. Speed of `classify` (no memo): FER2013 test crops (48x48, classified whole;
   target: over 1,000 pictures a second; beside the bare Keras model on the same
   pictures decoded) and 1280x960 composites as JPEG bytes, by detector.

The model is the best trial of an MLflow sweep (--sweep, found by its parent run's
tag `happysad.best_model_uri`) or --model URI; it is run through src/'s
`happysad.serving.pyfunc.load` on its data folder, checked against the model's own pyfunc.
About 7 minutes on 2 cores.

    python benchmarks/faces.py [--model URI | --sweep NAME] [--composites 54]
        [--backgrounds 60] [--out /tmp/faces-bench] [--parts framing detect composites e2e speed]

Record results in benchmarks/README.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from overhead import machine  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from happysad.serving import faces as faces_module  # noqa: E402
from happysad.serving import images as images_module  # noqa: E402
from happysad.serving import pyfunc as pyfunc_module  # noqa: E402
from happysad.serving.faces import Face, find_faces  # noqa: E402
from happysad.serving.images import open_image, pixel_digest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MUXSPACE = DATA / "muxspace-happysad"
FER_TEST = DATA / "fer2013-happysad" / "test"
TRACKING = f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}"
MAX_PIXELS = 40_000_000
SIZES = {"640x480": (640, 480), "1280x960": (1280, 960), "2400x1800": (2400, 1800)}
FACE_SIDES = (40, 80, 160)
FACE_COUNTS = (0, 1, 3)
BACKGROUNDS = ("noise", "gradient", "stripes", "checkerboard", "shapes", "text")


@dataclass(frozen=True)
class Arm:
    """A detector with the module settings it runs under."""

    name: str
    detector: str
    threshold: float | None = None  # faces.MTCNN_THRESHOLD; None: the module's own

    @contextlib.contextmanager
    def settings(self):
        old = faces_module.MTCNN_THRESHOLD
        if self.threshold is not None:
            faces_module.MTCNN_THRESHOLD = self.threshold
        try:
            yield
        finally:
            faces_module.MTCNN_THRESHOLD = old

    def detect(self, image: Image.Image) -> tuple[list[Face], float]:
        """The boxes (remembered for part 4) and the seconds find_faces took."""
        with self.settings():
            started = time.perf_counter()
            found = find_faces(image, self.detector)
            seconds = time.perf_counter() - started
            DETECTED[_key(image, self.detector)] = found
            return found, seconds


# Boxes per (detector, threshold, detect side, pixels): detection is deterministic, so
# part 4's arms reuse what parts 1 and 2 found instead of detecting again.
DETECTED: dict[tuple, list[Face]] = {}


def _key(image: Image.Image, detector: str) -> tuple:
    return (detector, faces_module.MTCNN_THRESHOLD, faces_module.DETECT_SIDE, pixel_digest(image))


ARMS = (
    Arm("mtcnn 0.8 (ours, the package's default)", "mtcnn", 0.8),
    Arm("mtcnn 0.9", "mtcnn", 0.9),
    Arm("haar", "haar"),
)


# ---------------------------------------------------------------- output helpers


def table(title: str, headers: list[str], rows: list[list]) -> None:
    """A markdown table on stdout, ready for the README."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")
    sys.stdout.flush()


def share(count: int, total: int) -> str:
    return f"{count}/{total} ({count / total:.1%})" if total else "-"


def ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.0f} ms" if seconds else "-"


# ---------------------------------------------------------------- 1. muxspace


@dataclass(eq=False)
class Photo:
    path: Path
    label: int  # 1 happy, 0 sad
    image: Image.Image
    boxes: dict[str, list[Face]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def load_muxspace(root: Path, limit: int | None) -> list[Photo]:
    files = [(p, 1) for p in sorted((root / "happy").iterdir())]
    files += [(p, 0) for p in sorted((root / "sad").iterdir())]
    if limit:
        files = files[:: max(1, len(files) // limit)][:limit]
    return [Photo(p, label, open_image(str(p), MAX_PIXELS)) for p, label in files]


def warm_up(arms: tuple[Arm, ...]) -> None:
    """Load each detector once: the first call pays for the model, not the picture."""
    blank = Image.new("RGB", (160, 120), (128, 128, 128))
    for arm in arms:
        arm.detect(blank)


def detect_all(items: list, arms: tuple[Arm, ...]) -> None:
    """Each arm's boxes and time on each photo or composite."""
    for arm in arms:
        for item in items:
            item.boxes[arm.name], item.seconds[arm.name] = arm.detect(item.image)


def report_muxspace(photos: list[Photo], arms: tuple[Arm, ...]) -> None:
    rows = []
    for arm in arms:
        counts = [len(p.boxes[arm.name]) for p in photos]
        rows.append(
            [
                arm.name,
                share(sum(c >= 1 for c in counts), len(photos)),
                share(sum(c > 1 for c in counts), len(photos)),
                sum(max(0, c - 1) for c in counts),
                ms([p.seconds[arm.name] for p in photos]),
            ]
        )
    table(
        f"1. Detection on muxspace ({len(photos)} pictures, one face each)",
        ["detector", "a face found", "more than one box", "extra boxes", "median time"],
        rows,
    )
    low, high = ARMS[0].name, ARMS[1].name  # MTCNN at 0.8 (ours) and at 0.9
    if high in photos[0].boxes and low in photos[0].boxes:
        gained = [p for p in photos if p.boxes[low] and not p.boxes[high]]
        scores = ", ".join(f"{p.boxes[low][0].score:.3f}" for p in gained)
        print(f"\nfaces MTCNN finds at 0.8 and not at 0.9: {len(gained)} (scores {scores or '-'})")


# ---------------------------------------------------------------- 2. composites


@dataclass(eq=False)
class Composite:
    name: str
    size: str
    background: str
    image: Image.Image
    pasted: list[tuple[int, int, int]]  # (x, y, side) of each face pasted
    boxes: dict[str, list[Face]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _smooth_noise(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    cell = int(rng.integers(16, 96))
    small = rng.integers(0, 256, (h // cell + 2, w // cell + 2, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


def _gradient(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / (np.ptp(t) or 1.0)
    a, b = np.array(_color(rng)), np.array(_color(rng))
    return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))


def _stripes(rng: np.random.Generator, w: int, h: int, checker: bool) -> Image.Image:
    period = float(rng.uniform(8, 80))
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if checker:
        on = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    else:
        on = np.sin(2 * np.pi * u / period) > 0
    a, b = np.array(_color(rng)), np.array(_color(rng))
    return Image.fromarray(np.where(on[..., None], a, b).astype(np.uint8))


def _draw_shapes(rng: np.random.Generator, image: Image.Image, count: int) -> None:
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for _ in range(count):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(8, max(9, min(w, h) // 4)))
        kind = rng.integers(0, 4)
        box = (x - r, y - r, x + r, y + int(r * rng.uniform(0.5, 1.5)))
        if kind == 0:
            draw.ellipse(box, fill=_color(rng), outline=_color(rng), width=int(rng.integers(1, 6)))
        elif kind == 1:
            draw.rectangle(box, fill=_color(rng))
        elif kind == 2:
            points = [
                (int(rng.integers(x - r, x + r)), int(rng.integers(y - r, y + r))) for _ in "abcd"
            ]
            draw.polygon(points, fill=_color(rng))
        else:
            end = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            draw.line([(x, y), end], fill=_color(rng), width=int(rng.integers(1, 12)))


def _draw_text(rng: np.random.Generator, image: Image.Image, lines: int) -> None:
    draw = ImageDraw.Draw(image)
    w, h = image.size
    words = (
        "happy sad face photo pipeline OPEN 24h SALE 0123456789 Gamma delta ooo @@ %% &&".split()
    )
    for _ in range(lines):
        size = int(rng.integers(12, max(13, h // 8)))
        font = ImageFont.load_default(size=size)
        text = " ".join(rng.choice(words, int(rng.integers(2, 6))))
        xy = (int(rng.integers(0, w - size)), int(rng.integers(0, h - size)))
        draw.text(xy, text, fill=_color(rng), font=font)


def background(rng: np.random.Generator, kind: str, size: tuple[int, int]) -> Image.Image:
    """A face-free picture of `kind`; every kind gets a few shapes and a line of text too."""
    w, h = size
    if kind == "noise":
        image = _smooth_noise(rng, w, h)
    elif kind in ("stripes", "checkerboard"):
        image = _stripes(rng, w, h, checker=kind == "checkerboard")
    elif kind in ("gradient", "shapes"):
        image = _gradient(rng, w, h)
    else:  # text: on paper-like light noise
        image = Image.blend(_smooth_noise(rng, w, h), Image.new("RGB", (w, h), "white"), 0.8)
    scale = w / 640
    _draw_shapes(rng, image, int((40 if kind == "shapes" else 4) * scale))
    _draw_text(rng, image, int((25 if kind == "text" else 1) * scale))
    return image


def _place(rng: np.random.Generator, size: tuple[int, int], sides: list[int]) -> list[tuple]:
    """Non-overlapping (x, y, side) places, with room around each face."""
    w, h = size
    placed: list[tuple[int, int, int]] = []
    for side in sides:
        for _ in range(1000):
            x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            if all(
                x + side + s // 2 < px
                or px + s + side // 2 < x
                or y + side + s // 2 < py
                or py + s + side // 2 < y
                for px, py, s in placed
            ):
                placed.append((x, y, side))
                break
    return placed


def make_composites(n: int, face_files: list[Path], seed: int) -> list[Composite]:
    """n composites: every picture size x face count, cycling face sides and backgrounds."""
    rng = np.random.default_rng(seed)
    combos = [(s, c) for s in SIZES for c in FACE_COUNTS]
    per_combo = max(1, n // len(combos))
    composites = []
    for (size_name, count), k in ((combo, k) for combo in combos for k in range(per_combo)):
        kind = BACKGROUNDS[len(composites) % len(BACKGROUNDS)]
        image = background(rng, kind, SIZES[size_name])
        sides = [FACE_SIDES[(k + j) % len(FACE_SIDES)] for j in range(count)]
        pasted = _place(rng, image.size, sides)
        for x, y, side in pasted:
            face = Image.open(face_files[int(rng.integers(len(face_files)))]).convert("RGB")
            image.paste(face.resize((side, side), Image.LANCZOS), (x, y))
        name = f"{size_name} {kind} {count} face{'s' * (count != 1)}"
        composites.append(Composite(name, size_name, kind, image, pasted))
    return composites


def match(boxes: list[Face], pasted: list[tuple[int, int, int]]) -> tuple[list[bool], list[Face]]:
    """Which pasted faces some box finds, and the boxes that find none (false)."""

    def finds(box: Face, place: tuple[int, int, int]) -> bool:
        x, y, side = place
        cx, cy = box.x + box.width / 2, box.y + box.height / 2
        return x <= cx <= x + side and y <= cy <= y + side and 0.3 * side <= box.side <= 1.5 * side

    found = [any(finds(b, p) for b in boxes) for p in pasted]
    false = [b for b in boxes if not any(finds(b, p) for p in pasted)]
    return found, false


def report_composites(composites: list[Composite], arms: tuple[Arm, ...]) -> None:
    rows = []
    for arm in arms:
        for size in [*SIZES, "all"]:
            group = [c for c in composites if size in ("all", c.size)]
            found = {s: [0, 0] for s in FACE_SIDES}
            false = 0
            for c in group:
                hits, wrong = match(c.boxes[arm.name], c.pasted)
                false += len(wrong)
                for (_, _, side), hit in zip(c.pasted, hits, strict=True):
                    found[side][0] += hit
                    found[side][1] += 1
            rows.append(
                [arm.name, size, len(group)]
                + [share(*found[s]) for s in FACE_SIDES]
                + [f"{false / len(group):.2f}", ms([c.seconds[arm.name] for c in group])]
            )
    table(
        f"2. Composites ({len(composites)}: faces pasted into drawn backgrounds)",
        [
            "detector",
            "picture",
            "pictures",
            *(f"{s} px faces found" for s in FACE_SIDES),
            "false per picture",
            "median time",
        ],
        rows,
    )
    kinds = [[arm.name] + [_false_per(composites, arm, k) for k in BACKGROUNDS] for arm in arms]
    table("2b. False detections per picture, by background", ["detector", *BACKGROUNDS], kinds)


def make_backgrounds(n: int, seed: int) -> list[Composite]:
    """n face-free pictures, cycling sizes and kinds: only false detections to count."""
    rng = np.random.default_rng(seed)
    sizes = list(SIZES)
    return [
        Composite(f"{size} {kind} 0 faces", size, kind, background(rng, kind, SIZES[size]), [])
        for i in range(n)
        for size, kind in [
            (sizes[i % len(sizes)], BACKGROUNDS[(i // len(sizes)) % len(BACKGROUNDS)])
        ]
    ]


def report_backgrounds(backgrounds: list[Composite], arms: tuple[Arm, ...]) -> None:
    rows = []
    for arm in arms:
        boxes = [b for c in backgrounds for b in c.boxes[arm.name]]
        hit = sum(bool(c.boxes[arm.name]) for c in backgrounds)
        scores = ", ".join(f"{b.score:.3f}" for b in sorted(boxes, key=lambda b: b.score))
        by_kind = [_false_per(backgrounds, arm, k) for k in BACKGROUNDS]
        rows.append([arm.name, len(boxes), share(hit, len(backgrounds)), *by_kind,
                     scores if arm.detector == "mtcnn" else "-"])  # fmt: skip
    table(
        f"2c. Face-free backgrounds ({len(backgrounds)}, the three sizes, no face pasted)",
        ["detector", "false boxes", "pictures with one", *(f"per {k}" for k in BACKGROUNDS),
         "MTCNN scores"],
        rows,
    )  # fmt: skip


def _false_per(composites: list[Composite], arm: Arm, kind: str) -> str:
    group = [c for c in composites if c.background == kind]
    false = sum(len(match(c.boxes[arm.name], c.pasted)[1]) for c in group)
    return f"{false / len(group):.2f}" if group else "-"


# ---------------------------------------------------------------- 3. contact sheets

CELL = (320, 240)
GREEN, RED, BLUE = (0, 220, 0), (255, 0, 0), (60, 120, 255)


def _thumbnail(image: Image.Image, truth: list, boxes: list[tuple[Face, tuple]], label: str):
    scale = min(CELL[0] / image.width, (CELL[1] - 16) / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    cell = Image.new("RGB", CELL, (30, 30, 30))
    cell.paste(image.convert("RGB").resize(size, Image.BILINEAR), (0, 0))
    draw = ImageDraw.Draw(cell)
    for x, y, s in truth:
        draw.rectangle([x * scale, y * scale, (x + s) * scale, (y + s) * scale], outline=BLUE)
    for f, color in boxes:
        corners = [f.x * scale, f.y * scale, (f.x + f.width) * scale, (f.y + f.height) * scale]
        draw.rectangle(corners, outline=color, width=2)
    draw.text((2, CELL[1] - 14), label, fill="white", font=ImageFont.load_default(size=11))
    return cell


def _grid(cells: list[Image.Image], columns: int) -> Image.Image:
    w, h = cells[0].size
    rows = (len(cells) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * w, rows * h), "black")
    for i, cell in enumerate(cells):
        sheet.paste(cell, ((i % columns) * w, (i // columns) * h))
    return sheet


def pick_for_sheet(photos: list[Photo], composites: list[Composite]):
    """12 muxspace pictures (those where a detector missed or added first) and 12 composites."""
    odd = [p for p in photos if any(len(b) != 1 for b in p.boxes.values())]
    rest = [p for p in photos if p not in odd]
    chosen_photos = (odd[:: max(1, len(odd) // 8)][:8] + rest[:: max(1, len(rest) // 4)])[:12]
    chosen_comp = composites[:: max(1, len(composites) // 12)][:12]
    return chosen_photos, chosen_comp


def _colored(boxes: list[Face], wrong: list[Face]) -> list[tuple[Face, tuple]]:
    return [(b, RED if b in wrong else GREEN) for b in boxes]


def contact_sheets(photos, composites, backgrounds, out: Path) -> list[Path]:
    """Per detector: a sheet of pictures with boxes and a sheet of its false boxes."""
    chosen = set(map(id, sum(pick_for_sheet(photos, composites), [])))
    written = []
    for key, arm in [("mtcnn", ARMS[0]), ("mtcnn-0.9", ARMS[1]), ("haar", ARMS[2])]:
        cells, falses = [], []
        for item in [*photos, *composites, *backgrounds]:
            if arm.name not in item.boxes:
                continue
            boxes = item.boxes[arm.name]
            truth = getattr(item, "pasted", None)
            wrong = boxes[1:] if truth is None else match(boxes, truth)[1]
            falses += [(item.image, b) for b in wrong]
            if id(item) in chosen and key != "mtcnn-0.9":
                colored = _colored(boxes, wrong)
                cells.append(
                    _thumbnail(item.image, truth or [], colored, _label(item, boxes, wrong))
                )
        written += _save_sheets(key, cells, falses, out)
    return written


def _label(item, boxes: list[Face], wrong: list[Face]) -> str:
    if isinstance(item, Photo):
        return f"{item.path.parent.name}/{item.path.name[:26]}: {len(boxes)} box"
    return f"{item.name}: {len(boxes) - len(wrong)} ok, {len(wrong)} false"


def _save_sheets(key: str, cells: list, falses: list, out: Path) -> list[Path]:
    paths = []
    if cells:
        paths.append(out / f"sheet-{key}.png")
        _grid(cells, 6).save(paths[-1])
    if falses:
        crops = []
        for image, b in falses[:40]:
            pad = max(b.width, b.height) // 2
            region = image.crop((b.x - pad, b.y - pad, b.x + b.width + pad, b.y + b.height + pad))
            crop = region.convert("RGB").resize((120, 120), Image.BILINEAR)
            ImageDraw.Draw(crop).rectangle([30, 30, 90, 90], outline=RED)
            crops.append(crop)
        paths.append(out / f"false-{key}.png")
        _grid(crops, 10).save(paths[-1])
    return paths


# ---------------------------------------------------------------- 4. end to end


def best_model_uri(sweep: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(TRACKING)
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.runName = '{sweep}' and tags.`happysad.role` = 'sweep'",
        order_by=["start_time DESC"],
    )
    column = "tags.happysad.best_model_uri"
    if runs.empty or column not in runs or not isinstance(runs[column].iloc[0], str):
        sys.exit(
            f"sweep '{sweep}' has no tag happysad.best_model_uri yet (not finished?): pass --model"
        )
    return runs[column].iloc[0]


def load_classifier(uri: str):
    """happysad's ImageClassifier (src/ code) on the logged model's data folder, checked
    against the model's own pyfunc (its copied code) on a few pictures."""
    import mlflow

    mlflow.set_tracking_uri(TRACKING)
    local = Path(mlflow.artifacts.download_artifacts(uri))
    clf = pyfunc_module.load(str(local / "data"))
    loaded = mlflow.pyfunc.load_model(uri)
    own = loaded._model_impl
    same_code = all(
        (local / "code" / "happysad_pyfunc" / n).read_text()
        == (Path(pyfunc_module.__file__).parent / n).read_text()
        for n in ("pyfunc.py", "images.py", "faces.py")
    )
    print(f"model: {uri}\n  preprocessing: {clf.preprocessing}")
    print(
        f"  pyfunc's model: {type(own).__module__}.{type(own).__name__}; "
        f"its copied code {'is' if same_code else 'DIFFERS from'} src/happysad's"
    )
    return clf, own


def check_same(clf, own, photos: list[Photo]) -> None:
    data = [p.path.read_bytes() for p in photos[::50]]
    ours = clf.classify(data, faces="largest", no_face="whole")
    theirs = own.classify(data, faces="largest", no_face="whole")
    gap = max(
        abs((a["probability"] or 0) - (b["probability"] or 0))
        for a, b in zip(ours, theirs, strict=True)
    )
    print(
        f"  src/ classifier vs the model's own pyfunc on {len(data)} pictures: max |dP| {gap:.2g}"
    )


def variant(clf, **changes):
    """The same Keras model with other preprocessing settings."""
    new = pyfunc_module.ImageClassifier.__new__(pyfunc_module.ImageClassifier)
    new.__dict__.update(clf.__dict__)
    new.preprocessing = dataclasses.replace(clf.preprocessing, **changes)
    return new


@contextlib.contextmanager
def memoised_detection():
    """find_faces inside classify answered from DETECTED when the same picture was seen."""

    def cached(image, detector):
        key = _key(image, detector)
        if key not in DETECTED:
            DETECTED[key] = find_faces(image, detector)
        return DETECTED[key]

    old = pyfunc_module.find_faces, images_module.find_faces
    pyfunc_module.find_faces = images_module.find_faces = cached
    try:
        yield
    finally:
        pyfunc_module.find_faces, images_module.find_faces = old


def scores(labels: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    predicted = (p >= 0.5).astype(int)
    return (
        accuracy_score(labels, predicted),
        balanced_accuracy_score(labels, predicted),
        roc_auc_score(labels, p),
    )


def e2e_arms(clf) -> list[tuple[str, object]]:
    return [
        ("whole picture", variant(clf, faces="whole")),
        *(
            (f"MTCNN crop, margin {m}", variant(clf, face_detector="mtcnn", face_margin=m))
            for m in (0.0, 0.1, 0.25)
        ),
        ("Haar crop, margin 0.0", variant(clf, face_detector="haar", face_margin=0.0)),
    ]


def end_to_end(clf, photos: list[Photo]) -> None:
    data = [p.path.read_bytes() for p in photos]
    labels = np.array([p.label for p in photos])
    whole = variant(clf, faces="whole").classify(data, faces="largest", no_face="whole")
    with memoised_detection():
        rows = [_e2e_row(name, arm, data, labels, whole, photos) for name, arm in e2e_arms(clf)]
    happy = int(labels.sum())
    crop_side = pyfunc_module.CROP_SIDE * clf.preprocessing.image_size
    small = sum(max(p.image.size) <= crop_side for p in photos)
    table(
        f"4. End to end on muxspace ({len(data)} pictures: {happy} happy, "
        f"{len(data) - happy} sad; faces=largest, no_face=whole; {small} pictures of at "
        f"most {crop_side} px are classified whole by every arm, as face crops)",
        ["arm", "from a face crop", "whole", "no probability (scored whole)",
         "median crop side / picture side", "accuracy", "balanced accuracy", "ROC AUC"],
        rows,
    )  # fmt: skip


def _e2e_row(name, arm, data, labels, whole, photos) -> list:
    out = arm.classify(data, faces="largest", no_face="whole")
    assert len(out) == len(data), "one row per picture"
    # A row with no probability (a face too small to classify) is scored whole, as a
    # picture with no face is: every picture gets exactly one prediction.
    unscored = {i for i, r in enumerate(out) if r["probability"] is None}
    p = np.array([(whole if i in unscored else out)[i]["probability"] for i in range(len(out))])
    crops = [(r, ph.image.size) for r, ph in zip(out, photos, strict=True) if r["face"] is not None]
    ratios = [_crop_side(r, size, arm.preprocessing.face_margin) / min(size) for r, size in crops]
    framing = f"{statistics.median(ratios):.2f}" if ratios else "-"
    acc, bacc, auc = scores(labels, p)
    counts = [len(crops), len(data) - len(crops), len(unscored)]
    return [name, *counts, framing, f"{acc:.3f}", f"{bacc:.3f}", f"{auc:.3f}"]


def _crop_side(row: dict, size: tuple[int, int], margin: float) -> int:
    face = Face(row["x"], row["y"], row["width"], row["height"])
    left, _, right, _ = faces_module.crop_box(face, margin, size)
    return right - left


# ---------------------------------------------------------------- 5. speed


def per_second(clf, data: list[bytes], repeats: int) -> list[float]:
    clf.classify(data[:8])  # warm-up: traces the model, loads the detector
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        rows = clf.classify(data)
        rates.append(len(data) / (time.perf_counter() - started))
    assert all(r["error"] is None or r["error"] == "no face found" for r in rows), rows[:3]
    return rates


def bare(clf, data: list[bytes], repeats: int) -> list[float]:
    """The ceiling: the model alone on the same pictures already decoded and sized."""
    arrays = np.stack(
        [clf.preprocessing.whole(open_image(io.BytesIO(b), MAX_PIXELS)) for b in data]
    )
    pyfunc_module.probabilities(clf.model, arrays[:256])
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        pyfunc_module.probabilities(clf.model, arrays)
        rates.append(len(arrays) / (time.perf_counter() - started))
    return rates


def _rates(rates: list[float]) -> list[str]:
    return [", ".join(f"{r:,.1f}" for r in rates), f"**{statistics.median(rates):,.1f}**"]


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def speed(clf, composites: list[Composite], crops: int, repeats: int) -> None:
    files = sorted(p for p in FER_TEST.rglob("*.jpg"))
    small = [f.read_bytes() for f in files]
    small = (small * (crops // len(small) + 1))[:crops]
    photos = [jpeg(c.image) for c in composites if c.size == "1280x960"]
    runs = [(f"FER2013 test, 48x48 ({len(small)}; {len(files)} files, repeated)", clf, small)]
    runs += [
        (f"1280x960 composites ({len(photos)}), {name}", variant(clf, **changes), photos)
        for name, changes in [
            ("MTCNN", {"face_detector": "mtcnn"}),
            ("Haar", {"face_detector": "haar"}),
            ("whole picture", {"faces": "whole"}),
        ]
    ]
    rows = []
    for name, arm, data in runs:
        rates = per_second(arm, data, repeats)
        rows.append([name, *_rates(rates)])
    rows.insert(
        1,
        ["the same 48x48, bare Keras model on decoded arrays", *_rates(bare(clf, small, repeats))],
    )
    table(
        f"5. ImageClassifier.classify speed (pictures per second, {repeats} repeats; "
        "target for 48x48: over 1,000)",
        ["pictures", "each repeat", "median"],
        rows,
    )


# ---------------------------------------------------------------- main


def framing(count: int, seed: int) -> None:
    """How FER2013's crops sit around MTCNN's box: the margin that reproduces them."""
    files = sorted((DATA / "fer2013-happysad" / "train").glob("*/*.jpg"))
    chosen = np.random.default_rng(seed).choice(
        len(files), size=min(count, len(files)), replace=False
    )
    ratios, dx, dy = [], [], []
    for i in chosen:
        face = Image.open(files[i]).convert("L").resize((192, 192), Image.BICUBIC)
        canvas = Image.new("L", (384, 384), 128)
        canvas.paste(face, (96, 96))
        found = find_faces(canvas, "mtcnn")
        if found:
            box = found[0]
            ratios.append(192 / max(box.width, box.height))
            dx.append((box.x + box.width / 2 - 192) / 192)
            dy.append((box.y + box.height / 2 - 192) / 192)
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    table(
        f"0. FER2013 framing around MTCNN's box ({len(ratios)} of {len(chosen)} faces found)",
        [
            "crop side / box's longer side: median",
            "quartiles",
            "margin (median - 1) / 2",
            "box centre off the crop's (x, y), share of the side",
        ],
        [
            [
                f"{median:.3f}",
                f"{q1:.3f} to {q3:.3f}",
                f"{(median - 1) / 2:+.3f}",
                f"{np.median(dx):+.3f}, {np.median(dy):+.3f}",
            ]
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a logged model's URI (default: the sweep's best)")
    parser.add_argument("--sweep", default="fer2013-best-m0", help="sweep name for --model")
    parser.add_argument("--muxspace", type=Path, default=MUXSPACE)
    parser.add_argument("--photos", type=int, default=0, help="muxspace pictures (0: all)")
    parser.add_argument("--composites", type=int, default=54)
    parser.add_argument("--backgrounds", type=int, default=60, help="face-free pictures")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--crops", type=int, default=2000, help="48x48 pictures for the speed test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/faces-bench"))
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["framing", "detect", "composites", "e2e", "speed"],
        choices=["framing", "detect", "composites", "e2e", "speed"],
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()

    photos = load_muxspace(args.muxspace, args.photos)
    face_files = [p.path for p in photos if p.image.size == (350, 350)]
    composites = make_composites(args.composites, face_files, args.seed)
    backgrounds: list[Composite] = []
    warm_up(ARMS)
    if "framing" in args.parts:
        framing(300, args.seed)
    if "detect" in args.parts:
        detect_all(photos, ARMS)
        report_muxspace(photos, ARMS)
    if "composites" in args.parts:
        detect_all(composites, ARMS)
        report_composites(composites, ARMS)
        backgrounds = make_backgrounds(args.backgrounds, args.seed + 1)
        detect_all(backgrounds, ARMS)
        report_backgrounds(backgrounds, ARMS)
    if {"detect", "composites"} & set(args.parts):
        for path in contact_sheets(photos, composites, backgrounds, args.out):
            print(f"wrote {path}")
    if {"e2e", "speed"} & set(args.parts):
        clf, own = load_classifier(args.model or best_model_uri(args.sweep))
        check_same(clf, own, photos)
        if "e2e" in args.parts:
            end_to_end(clf, photos)
        if "speed" in args.parts:
            speed(clf, composites, args.crops, args.repeats)
    print(
        f"\nmachine: {machine()}; date: {datetime.date.today().isoformat()}; "
        f"{time.perf_counter() - began:.0f} s in all"
    )


if __name__ == "__main__":
    main()
