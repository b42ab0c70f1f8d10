"""`python -m happysad.predict PATH [PATH ...] [--model URI] [--output FILE]`

Classify image files with a logged model: the champion by default. PATH is an image
file, a folder (every file in it, hidden ones left out) or a glob pattern. One line
per image: path, label (happy or sad) and the probability of happy; a file that
cannot be read gets its own line with the reason. `--output` writes the same as CSV
or JSON, by the file's extension. The exit status is non-zero only if nothing could
be predicted.

The model's own preprocessing (image size, color mode, resize policy, face
cropping) is used: it travels with the model.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from happysad.errors import HappysadError, StoreError  # noqa: E402

DEFAULT_MODEL = "models:/happysad@champion"
CHUNK = 512  # files read and predicted at a time, so a huge folder never sits in memory

log = logging.getLogger("happysad")


def expand(patterns: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The files the PATH arguments name, and an error row for each that names none."""
    files, missing = [], []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files += sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            files.append(pattern)
        else:
            matches = sorted(m for m in glob.glob(pattern, recursive=True) if Path(m).is_file())
            if matches:
                files += matches
            else:
                missing.append(
                    {
                        "path": pattern,
                        "label": None,
                        "probability": None,
                        "error": "no such file or folder, and no file matches it as a pattern",
                    }
                )
    return files, missing


def load_model(uri: str):
    """The pyfunc model at `uri`, or a StoreError that says what to do."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from happysad.tracking import check_reachable

    check_reachable(mlflow.get_tracking_uri())
    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as err:
        text = err.message
        if (
            uri.startswith("models:/")
            and "@" in uri
            and ("alias" in text.lower() or "not found" in text.lower())
        ):
            name, alias = uri[len("models:/") :].split("@", 1)
            raise StoreError(
                f"no version of the registered model '{name}' has the alias '{alias}' yet: run a sweep, "
                "then python -m happysad.promote to make its best model the champion"
            ) from err
        raise StoreError(
            f"the model {uri} does not exist in {mlflow.get_tracking_uri()}: {text}"
        ) from err
    except OSError as err:
        raise StoreError(f"the model {uri} cannot be read: {err}") from err


def predict(files: list[str], model) -> list[dict[str, Any]]:
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for start in range(0, len(files), CHUNK):
        chunk = files[start : start + CHUNK]
        images, readable, chunk_rows = [], [], []
        for path in chunk:
            row = {"path": path, "label": None, "probability": None, "error": None}
            try:
                images.append(Path(path).read_bytes())
                readable.append(row)
            except OSError as err:
                row["error"] = f"unreadable: {err.strerror}"
            chunk_rows.append(row)
        if images:
            answers = model.predict(pd.DataFrame({"image": images}))
            for row, answer in zip(readable, answers.to_dict("records"), strict=True):
                error = answer.get("error")
                if isinstance(error, str):
                    row["error"] = error
                else:
                    row["label"], row["probability"] = answer["label"], float(answer["probability"])
        rows += chunk_rows
    return rows


def write(rows: list[dict[str, Any]], output: Path) -> None:
    fields = ["path", "label", "probability", "error"]
    if output.suffix.lower() == ".csv":
        with open(output, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    else:
        output.write_text(json.dumps(rows, indent=2) + "\n")


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
    parser.add_argument(
        "--output", type=Path, help="also write the results to this .csv or .json file"
    )
    args = parser.parse_args(argv)
    if args.output and args.output.suffix.lower() not in (".csv", ".json"):
        parser.error(f"--output {args.output}: the file must end in .csv or .json")

    import mlflow

    from happysad.tracking import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI")))
    files, missing = expand(args.paths)
    try:
        model = load_model(args.model)
    except HappysadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = predict(files, model) + missing
    width = max((len(r["path"]) for r in rows), default=0)
    for r in rows:
        if r["error"]:
            print(f"{r['path']:<{width}}  error: {r['error']}")
        else:
            print(f"{r['path']:<{width}}  {r['label']:<5}  {r['probability']:.4f}")
    if args.output:
        write(rows, args.output)
    predicted = sum(1 for r in rows if not r["error"])
    print(f"{predicted} of {len(rows)} images predicted with {args.model}", file=sys.stderr)
    return 0 if predicted else 1


if __name__ == "__main__":
    sys.exit(main())
