"""`python -m happysad.predict PATH [PATH ...] [--model URI] [--faces all|largest]
[--no-face say|whole] [--annotate DIR] [--output FILE]`

Find the faces in pictures and classify each with a logged model: the champion by
default. PATH is an image file, a folder (every file in it, hidden ones left out) or a
glob pattern. One line per face: path, face number (largest first), its box (x, y,
width, height in the picture's pixels), label (happy or sad) and the probability of
happy. A picture with no face says so in its line (`--no-face whole` classifies it
whole instead); a picture small enough to be a face crop itself (FER2013's 48x48) is
classified whole; a file that cannot be read gets its own line with the reason.
`--annotate DIR` writes each picture with its faces boxed and labelled; `--output`
writes the lines as CSV or JSON, by the file's extension. The exit status is non-zero
only if nothing could be predicted.

How pictures are prepared (face finding, crop, image size, color mode) is the model's
own: it travels with the model. A model trained on whole pictures gets them whole.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from happysad.data.listing import expand  # noqa: E402
from happysad.errors import HappysadError  # noqa: E402
from happysad.results.annotate import annotate_all, check_folder  # noqa: E402
from happysad.serving.images import Unusable, read_file  # noqa: E402
from happysad.tracking.store import (
    Store,  # noqa: E402
    add_store_option,  # noqa: E402
    resolve_tracking_uri,  # noqa: E402
)

DEFAULT_MODEL = "models:/happysad@champion"
CHUNK = 512  # files read and predicted at a time, so a huge folder never sits in memory
MAX_PIXELS = 40_000_000  # pictures declaring more are not annotated (data.max_pixels' default)

log = logging.getLogger("happysad")


def load_model(uri: str, tracking_uri: str | None = None):
    """The pyfunc model at `uri` in the store, or a StoreError that says what to do."""
    return Store.existing(tracking_uri).load_pyfunc(uri)


FIELDS = ["path", "face", "x", "y", "width", "height", "label", "probability", "error"]


def _row(path: str, **values: Any) -> dict[str, Any]:
    return {**dict.fromkeys(FIELDS), "path": path, **values}


def predict(
    files: list[str], model, faces: str = "all", no_face: str = "say"
) -> list[dict[str, Any]]:
    """One row per face (or per picture) of each file, in the order of `files`."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for start in range(0, len(files), CHUNK):
        chunk = files[start : start + CHUNK]
        # The rows of each file of the chunk, by its place (a file may be named twice).
        answered: list[list[dict[str, Any]]] = [[] for _ in chunk]
        images, readable = [], []
        for place, path in enumerate(chunk):
            try:
                images.append(read_file(path))
                readable.append(place)
            except Unusable as err:
                answered[place].append(_row(path, error=str(err)))
        if images:
            answers = model.predict(
                pd.DataFrame({"image": images}), params={"faces": faces, "no_face": no_face}
            )
            for i, answer in enumerate(answers.to_dict("records")):
                # Models saved before faces were found answer one row per image, in order.
                place = readable[answer["input"] if "input" in answer else i]
                answered[place].append(
                    _row(chunk[place], **{k: _value(answer.get(k)) for k in FIELDS[1:]})
                )
        for place, path in enumerate(chunk):
            rows += answered[place] or [_row(path, error="the model gave no answer")]
    return rows


def _value(value: Any) -> Any:
    """None for a missing value, whatever pandas made of it; plain Python numbers."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def write(rows: list[dict[str, Any]], output: Path) -> None:
    if output.suffix.lower() == ".csv":
        with open(output, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    else:
        output.write_text(json.dumps(rows, indent=2) + "\n")


def show(row: dict[str, Any], width: int) -> str:
    """One console line: path, face and box, then the label or the reason."""
    where = ""
    if row["x"] is not None:
        box = f"{row['x']},{row['y']} {row['width']}x{row['height']}"
        where = f"face {row['face']} at {box}" if row["face"] else f"whole {box}"
    if row["error"]:
        return f"{row['path']:<{width}}  {where + '  ' if where else ''}error: {row['error']}"
    return f"{row['path']:<{width}}  {where:<28}  {row['label']:<5}  {row['probability']:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m happysad.predict",
        description="Classify image files as happy or sad with a logged happysad model.",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="an image file, a folder or a glob pattern"
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"an MLflow model URI (default {DEFAULT_MODEL})"
    )

    add_store_option(parser)
    parser.add_argument(
        "--faces",
        choices=["all", "largest"],
        default="all",
        help="a line for every face found (default), or for the largest face of each picture",
    )
    parser.add_argument(
        "--no-face",
        choices=["say", "whole"],
        default="say",
        help="a picture with no face found: say so in its line (default), or classify it whole",
    )
    parser.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="write each picture to DIR with its faces boxed and labelled",
    )
    parser.add_argument(
        "--output", type=Path, help="also write the results to this .csv or .json file"
    )
    args = parser.parse_args(argv)
    if args.output and args.output.suffix.lower() not in (".csv", ".json"):
        parser.error(f"--output {args.output}: the file must end in .csv or .json")

    uri = resolve_tracking_uri(args.tracking_uri)
    print(f"MLflow store: {uri}", file=sys.stderr)
    files, notes = expand(args.paths)
    missing = [_row(path, error=reason) for path, reason in notes]
    try:
        if args.annotate:
            check_folder(args.annotate, files)
        model = load_model(args.model, uri)
    except HappysadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = predict(files, model, args.faces, args.no_face) + missing
    width = max((len(r["path"]) for r in rows), default=0)
    for r in rows:
        print(show(r, width))
    if args.output:
        write(rows, args.output)
    if args.annotate:
        written = annotate_all(rows, args.annotate, max_pixels=MAX_PIXELS)
        print(f"{written} annotated pictures in {args.annotate}", file=sys.stderr)
    pictures = {r["path"] for r in rows}
    done = {r["path"] for r in rows if r["label"] is not None}
    faces = sum(1 for r in rows if r["label"] is not None and r["face"])
    print(
        f"{len(done)} of {len(pictures)} pictures predicted ({faces} faces) with {args.model}",
        file=sys.stderr,
    )
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
