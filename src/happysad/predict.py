"""`python -m happysad.predict PATH [PATH ...] [--model URI] [--faces all|largest]
[--no-face say|whole] [--annotate DIR] [--output FILE]`

Find the faces in pictures and classify each with a logged model: the champion by
default (`--model FILE.tflite|FILE.onnx`: a file written by `happysad.export`, run with
the preprocessing written in it). PATH is an image file, a folder (every file in it,
hidden ones left out) or a glob pattern. One line per face: path, face number (largest first), its box (x, y,
width, height in the picture's pixels), label (happy or sad) and the probability of
happy. A picture with no face says so in its line (`--no-face whole` classifies it
whole instead); a picture small enough to be a face crop itself (FER2013's 48x48) is
classified whole; a file that cannot be read gets its own line with the reason.
`--annotate DIR` writes each picture with its faces boxed and labelled; `--output`
writes the lines as CSV or JSON, by the file's extension. The exit status is non-zero
only if nothing could be predicted.

Nothing is lost or overwritten: annotated pictures are new files (a DIR holding an
input is refused); `--output` replaces FILE only when complete, and Ctrl-C keeps the
rows done so far in FILE.partial (exit status 130). A FIFO, a socket, a device or a
folder where a picture is expected, and a link loop, get a line with the reason: no
path hangs predict or is read twice.

How pictures are prepared (face finding, crop, image size, color mode) is the model's
own: it travels with the model. A model trained on whole pictures gets them whole.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from happysad.data.listing import expand  # noqa: E402
from happysad.errors import ConfigError, HappysadError  # noqa: E402
from happysad.results.annotate import annotate_all, check_folder  # noqa: E402
from happysad.results.files import RowsFile, printable  # noqa: E402
from happysad.serving import exported  # noqa: E402
from happysad.serving.images import Unusable, read_file  # noqa: E402
from happysad.tracking.store import (
    Store,  # noqa: E402
    add_store_option,  # noqa: E402
    resolve_tracking_uri,  # noqa: E402
    without_credentials,  # noqa: E402
)

DEFAULT_MODEL = "models:/happysad@champion"
CHUNK = 512  # files read and predicted at a time, so a huge folder never sits in memory
MAX_PIXELS = 40_000_000  # pictures declaring more are not annotated (data.max_pixels' default)

log = logging.getLogger("happysad")


def load_model(uri: str, tracking_uri: str | None = None):
    """The pyfunc model at `uri` in the store, or an exported file (.tflite, .onnx) run
    with the preprocessing written in it; a HappysadError that says what to do."""
    if ":/" not in uri and exported.format_of(uri):
        return exported.load(uri)
    return Store.existing(tracking_uri).load_pyfunc(uri)


FIELDS = ["path", "face", "x", "y", "width", "height", "label", "probability", "error"]


def _row(path: str, **values: Any) -> dict[str, Any]:
    return {**dict.fromkeys(FIELDS), "path": path, **values}


def predict(
    files: list[str], model, faces: str = "all", no_face: str = "say"
) -> list[dict[str, Any]]:
    """One row per face (or per picture) of each file, in the order of `files`."""
    return [row for rows in predict_chunks(files, model, faces, no_face) for row in rows]


def predict_chunks(
    files: list[str], model, faces: str = "all", no_face: str = "say"
) -> Iterator[list[dict[str, Any]]]:
    """The rows of `files`, a chunk of files at a time: 1, 2, 4, ... up to CHUNK, so the
    first lines come at once and a huge folder never sits in memory."""
    import pandas as pd

    start, size = 0, 1
    while start < len(files):
        chunk = files[start : start + size]
        start, size = start + size, min(2 * size, CHUNK)
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
        yield [
            row
            for place, path in enumerate(chunk)
            for row in answered[place] or [_row(path, error="the model gave no answer")]
        ]


def _value(value: Any) -> Any:
    """None for a missing value, whatever pandas made of it; plain Python numbers."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def show(row: dict[str, Any], width: int) -> str:
    """One console line: path, face and box, then the label or the reason (any text as
    UTF-8 can carry it: a file name that is not UTF-8 gets backslash escapes)."""
    row = {k: printable(v) if isinstance(v, str) else v for k, v in row.items()}
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
        "--model",
        default=DEFAULT_MODEL,
        help=f"an MLflow model URI (default {DEFAULT_MODEL}), or a file from happysad.export "
        "(.tflite, .onnx)",
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
    print(f"MLflow store: {without_credentials(uri)}", file=sys.stderr)
    try:
        return _run(args, uri)
    except KeyboardInterrupt:
        print("Interrupted: no file was left half-written.", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, uri: str) -> int:
    """predict as the arguments say; the lines printed (and written to --output) as
    each chunk of pictures is done."""
    files, notes = expand(args.paths)
    missing = [_row(path, error=reason) for path, reason in notes]
    try:
        if args.annotate:
            check_folder(args.annotate, files)
        model = load_model(args.model, uri)
        output = _open_output(args.output) if args.output else None
    except HappysadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    width = max((len(printable(p)) for p in [*files, *(r["path"] for r in missing)]), default=0)
    rows: list[dict[str, Any]] = []
    try:
        for chunk in chain(predict_chunks(files, model, args.faces, args.no_face), [missing]):
            for row in chunk:
                print(show(row, width))
            sys.stdout.flush()
            if output:
                output.add(chunk)
            rows += chunk
        if output:
            output.finish()
    except BaseException as stop:
        if output is None:
            raise
        kept = output.keep_partial()
        print(
            f"{'Interrupted' if isinstance(stop, KeyboardInterrupt) else 'Stopped by an error'}: "
            f"the {output.count} rows done so far are in {kept}; {args.output} was not changed.",
            file=sys.stderr,
        )
        if isinstance(stop, KeyboardInterrupt):
            return 130
        raise
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


def _open_output(path: Path) -> RowsFile:
    """The --output file's writer, or a ConfigError before any picture is read."""
    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder: name a .csv or .json file")
    try:
        return RowsFile(path, FIELDS)
    except OSError as err:
        raise ConfigError(
            f"--output {path} cannot be written ({err.strerror}): name a file in a folder "
            "that exists and that you may write to"
        ) from err


if __name__ == "__main__":
    sys.exit(main())
