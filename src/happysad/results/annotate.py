"""`predict --annotate DIR`: each picture written again with its faces boxed and labelled,
so a person can look rather than read a CSV.

A box is drawn in the label's colour between two thin black lines, and its caption
(the label and its probability: "happy 97%", "sad 88%") is white on a solid patch of
that colour, so both stay readable on light and dark pictures alike.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from happysad.errors import ConfigError
from happysad.results.files import write_new
from happysad.serving.images import Unusable, open_picture, read_file

COLORS = {"happy": (214, 120, 0), "sad": (30, 90, 200), None: (110, 110, 110)}
KEEP_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def annotate(image: Image.Image, rows: list[dict[str, Any]], factor: float = 1.0) -> Image.Image:
    """A copy of the picture with every row's face boxed and captioned; the rows' boxes
    are in the file's pixels, `factor` times the picture's (a huge JPEG decoded small)."""
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    side = max(image.size)
    line = max(2, side // 200)
    font = ImageFont.load_default(size=max(14, side // 36))
    for row in rows:
        color = COLORS.get(row.get("label"), COLORS[None])
        caption = _caption(row)
        if row.get("face") and row.get("x") is not None:
            x, y, w, h = (round(row[k] / factor) for k in ("x", "y", "width", "height"))
            box = (x, y, x + w - 1, y + h - 1)
            draw.rectangle(_grow(box, line + 1), outline=(0, 0, 0), width=1)
            draw.rectangle(_grow(box, line), outline=color, width=line)
            draw.rectangle(_grow(box, -1), outline=(0, 0, 0), width=1)
            anchor = (x - line, y - line)
            below = y - line < side // 20  # no room above the box: caption inside it
            _label(draw, anchor, caption, color, font, below)
        else:  # the whole picture, or no face found: caption in the top-left corner
            _label(draw, (0, 0), caption, color, font, True)
    return image


def check_folder(folder: Path, inputs: list[str]) -> None:
    """ConfigError unless `folder` can take annotated pictures: a folder (or nothing yet)
    that holds none of the input pictures, at any depth, since a copy beside its
    original would be read as an input the next time."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"--annotate {folder} is a file, not a folder: name a folder for the annotated pictures"
        )
    inside = os.path.realpath(folder)
    for path in inputs:
        real = os.path.realpath(path)
        if os.path.commonpath([inside, real]) == inside:
            raise ConfigError(
                f"--annotate {folder} holds the input picture {path}: name a folder for the "
                "annotated copies that holds none of the pictures (nothing was written)"
            )


def annotate_all(rows: list[dict[str, Any]], folder: Path, max_pixels: int) -> int:
    """Every readable picture among the rows, annotated into `folder`; how many. Each is a
    new file (pic.png taken, by anything: pic-1.png), written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    by_path: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_path[row["path"]].append(row)
    written = 0
    for path, picture_rows in by_path.items():
        try:
            image, factor = open_picture(io.BytesIO(read_file(path)), max_pixels)
        except Unusable:
            continue  # its row already says why
        stem, ext = os.path.splitext(os.path.basename(path))
        ext = ext.lower() if ext.lower() in KEEP_FORMAT else ".png"
        out = annotate(image, picture_rows, factor)
        options = {"quality": 92} if ext != ".png" else {}
        write_new(folder, stem + ext, partial(out.save, format=KEEP_FORMAT[ext], **options))
        written += 1
    return written


def _caption(row: dict[str, Any]) -> str:
    if row.get("label") is not None:
        # The shown label's own probability: "sad 0%" would read as "not sad".
        p = row["probability"] if row["label"] == "happy" else 1 - row["probability"]
        return f"{row['label']} {p:.0%}"
    error = row.get("error") or "not classified"
    return "too small" if row.get("face") and "too small" in error else error


def _grow(box: tuple[int, int, int, int], by: int) -> tuple[int, int, int, int]:
    return box[0] - by, box[1] - by, box[2] + by, box[3] + by


def _label(draw: ImageDraw.ImageDraw, at: tuple[int, int], text: str, color, font, below: bool):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 4)
    width, height = right - left + 2 * pad, bottom - top + 2 * pad
    x = max(0, at[0])
    y = max(0, at[1] if below else at[1] - height)
    draw.rectangle((x, y, x + width, y + height), fill=color, outline=(0, 0, 0))
    draw.text((x + pad - left, y + pad - top), text, fill=(255, 255, 255), font=font)
