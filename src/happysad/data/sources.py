"""Where the images of a data set are, before any is decoded: the files of a
class-folder tree (with the splits its train/, val/ and test/ folders give) or the
rows of FER2013's single-file CSV, each an `Entry` with its label and a stamp that
changes when the image does."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from happysad.config.schema import PublicTest
from happysad.errors import DataError
from happysad.serving.images import Unusable

SPLITS = ("train", "val", "test")
# FER2013's emotion codes for the two classes.
FER_EMOTIONS = {3: 1, 4: 0}
FER_USAGE = {"Training": "train", "PrivateTest": "test"}
# Folders that are never image folders: macOS resource forks and the like.
IGNORED_FOLDERS = {"__MACOSX"}


@dataclass
class Entry:
    """One image to read: where it is, its label, and its split if the data gives one."""

    key: str
    label: int
    split: str | None
    stamp: str  # size and modification time, or the row's content: changes rebuild the cache
    read: Callable[[], Any]  # a path or a file object for open_image


def folder_entries(root: Path, happy: str, sad: str) -> tuple[list[Entry], str]:
    """The images of a class-folder tree, with the splits its train/val/test folders give."""
    if not root.is_dir():
        raise DataError(
            f"data.path '{root}' does not exist or is not a folder: point data.path at a "
            f"folder with {happy}/ and {sad}/ subfolders (or train/ and test/ folders holding them)"
        )
    found = _subfolders(root)
    if "train" in found:
        splits = [s for s in SPLITS if s in found]
        if "test" not in splits:
            raise DataError(
                f"data.path '{root}' has a train/ folder but no test/ folder: add one, "
                "or put the class folders at the top to have the images split for you"
            )
        roots = {s: root / s for s in splits}
        layout = "+".join(splits)
    else:
        roots = {None: root}
        layout = "classes"
    entries = []
    for split, base in roots.items():
        present = _subfolders(base)
        missing = [c for c in (happy, sad) if c not in present]
        if missing:
            where = f"data.path '{base}'"
            raise DataError(
                f"{where} has no {' or '.join(repr(m + '/') for m in missing)} folder "
                f"(found: {', '.join(present) or 'no folders'}): put each class's images in its own "
                "folder, or set data.happy_folder and data.sad_folder"
            )
        for label, name in ((1, happy), (0, sad)):
            for path, stat in _files(base / name):
                entries.append(
                    Entry(path, label, split, f"{stat.st_size}:{stat.st_mtime_ns}", path)
                )
    return entries, layout


def class_folder_entries(root: Path) -> tuple[list[Entry], tuple[str, ...]]:
    """A folder with one subfolder per class, any number of classes (sorted by name,
    the label of each is its index): for pretraining a backbone."""
    if not root.is_dir():
        raise DataError(
            f"data.path '{root}' does not exist or is not a folder: point it at a folder "
            "with one subfolder of images per class"
        )
    class_names = tuple(_subfolders(root))
    if len(class_names) < 2:
        raise DataError(
            f"data.path '{root}' has {len(class_names)} class folder(s) "
            f"({', '.join(class_names) or 'none'}): a backbone needs at least two classes"
        )
    entries = [
        Entry(path, label, None, f"{stat.st_size}:{stat.st_mtime_ns}", path)
        for label, name in enumerate(class_names)
        for path, stat in _files(root / name)
    ]
    return entries, class_names


def fer2013_csv_entries(path: Path, public_test: PublicTest) -> tuple[list[Entry], str]:
    """The happy and sad rows of FER2013's single-file release."""
    usage = {**FER_USAGE, "PublicTest": public_test.value}
    entries = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not {"emotion", "pixels", "Usage"} <= set(reader.fieldnames or ()):
                raise DataError(
                    f"data.path '{path}' is not fer2013.csv: its columns are "
                    f"{reader.fieldnames}, not emotion,pixels,Usage"
                )
            for row_number, row in enumerate(reader, start=2):
                label = FER_EMOTIONS.get(int(row["emotion"]) if row["emotion"].isdigit() else -1)
                if label is None:
                    continue
                pixels = row["pixels"]
                entries.append(
                    Entry(
                        f"{path.name}:row {row_number}",
                        label,
                        usage.get(row["Usage"], "train"),
                        hashlib.md5(pixels.encode()).hexdigest(),
                        _csv_image_reader(pixels),
                    )
                )
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"data.path '{path}' cannot be read as fer2013.csv: {err}") from err
    if not entries:
        raise DataError(f"data.path '{path}' has no happy (emotion 3) or sad (emotion 4) rows")
    return entries, "fer2013.csv"


def _csv_image_reader(pixels: str) -> Callable[[], Any]:
    def read() -> Any:
        values = pixels.split()
        side = int(len(values) ** 0.5)
        if side * side != len(values) or side == 0:
            raise Unusable(f"a pixels field of {len(values)} values is not a square image")
        arr = np.array(values, dtype=np.uint8).reshape(side, side)
        buffer = io.BytesIO()
        Image.fromarray(arr, "L").save(buffer, format="PNG")
        buffer.seek(0)
        return buffer

    return read


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not _ignored(p.name))


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_FOLDERS


def _files(folder: Path) -> list[tuple[str, os.stat_result]]:
    """Every file below a class folder with its stat, hidden files and folders left out.
    Links to folders are followed, each real folder entered once, so a link loop ends.
    Plain strings and scandir: on 15,000 files pathlib costs more than the cached load."""
    out = []
    pending = [str(folder)]
    entered = {(found.st_dev, found.st_ino) for found in [os.stat(folder)]}
    while pending:
        with os.scandir(pending.pop()) as listing:
            items = sorted(listing, key=lambda e: e.name)
        for item in items:
            if _ignored(item.name):
                continue
            if item.is_dir():
                found = item.stat()
                if (found.st_dev, found.st_ino) not in entered:
                    entered.add((found.st_dev, found.st_ino))
                    pending.append(item.path)
            elif item.is_file():
                out.append((item.path, item.stat()))
    return sorted(out, key=lambda f: f[0])
