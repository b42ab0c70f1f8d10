"""Files the commands write for a user, none of them ever written over by accident.

`write_new` puts a new file in a folder under a name nobody holds (pic.png taken:
pic-1.png), whole or not at all: it is written under a temporary name and linked to
its own name only when complete, which fails rather than replaces when the name is
taken, by a file or a link. `RowsFile` writes the rows of a command's `--output`
beside it and renames them onto it only when complete; interrupted, the rows written
so far are kept in FILE.partial. Text goes out as UTF-8 whatever the file names hold,
and a CSV cell that a spreadsheet would run as a formula is quoted.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import itertools
import json
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

NAME_MAX = 255  # bytes in a file name, where the file system does not say
# Errors of os.link where the file system has no hard links: claim the name instead.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}


def write_new(folder: Path, name: str, write: Callable[[IO[bytes]], None]) -> Path:
    """A new file in `folder` holding what `write` writes, under `name` or, if that is
    taken, its first free numbered form (stem-1.ext, stem-2.ext, ...), shortened to fit
    the file system; never written over anything, never through a link."""
    stem, ext = os.path.splitext(name)
    temporary = _temporary(folder)
    try:
        with open(temporary, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        return _place(temporary, folder, stem, ext)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def fitting_name(folder: Path, stem: str, ext: str) -> str:
    """stem + ext, the stem shortened until the name fits the folder's file system."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = NAME_MAX
    ext = ext if len(os.fsencode(ext)) < limit // 2 else ""
    stem = stem[:limit]  # a character takes a byte at least
    while len(os.fsencode(stem + ext)) > limit:
        stem = stem[:-1]
    return stem + ext


def _temporary(folder: Path) -> Path:
    """A fresh hidden file in `folder`, created exclusively (never through a link)."""
    while True:
        path = folder / f".happysad-{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue


def _place(temporary: Path, folder: Path, stem: str, ext: str) -> Path:
    """The complete temporary file under the first free name: a hard link fails on a
    taken name; without hard links the name is claimed (O_EXCL) and renamed onto."""
    for n in itertools.count():
        target = folder / fitting_name(folder, f"{stem}-{n}" if n else stem, ext)
        try:
            os.link(temporary, target, follow_symlinks=False)
            return target
        except FileExistsError:
            continue
        except OSError as err:
            if err.errno not in _NO_LINKS:
                raise
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        os.replace(temporary, target)  # onto the empty file just claimed: ours
        return target
    raise AssertionError("unreachable")


def printable(text: str) -> str:
    """Text as UTF-8 can carry it: bytes of a file name that are not UTF-8 (which Python
    holds as lone surrogates) and control characters as backslash escapes."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "backslashreplace")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        text = "".join(c if 32 <= ord(c) != 127 else f"\\x{ord(c):02x}" for c in text)
    return text


def spreadsheet_safe(text: str) -> str:
    """A CSV cell a spreadsheet will show, not run: text starting with = + - @ (or a tab
    or carriage return) gets a leading single quote, as OWASP advises."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class RowsFile:
    """The rows of `--output FILE` (.csv or .json), written as they come to a temporary
    file beside FILE; `finish` renames it onto FILE, `keep_partial` keeps what was
    written as FILE.partial. FILE itself is untouched until `finish`."""

    def __init__(self, path: Path, fields: list[str]):
        self.path = path
        self.target = Path(os.path.realpath(path))  # a link to the file: write the file
        self.fields = fields
        self.json = self.target.suffix.lower() == ".json"
        self.count = 0
        self.temporary = _temporary(self.target.parent)
        self._file = open(self.temporary, "w", encoding="utf-8", newline="")
        if self.json:
            self._file.write("[")
        else:
            self._csv = csv.writer(self._file)
            self._csv.writerow(fields)
        self._file.flush()

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            if self.json:
                values = {k: _text(row.get(k), printable) for k in self.fields}
                self._file.write(("," if self.count else "") + "\n  " + json.dumps(values))
            else:
                self._csv.writerow(_text(row.get(k), _cell) for k in self.fields)
            self.count += 1
        self._file.flush()

    def finish(self) -> Path:
        self._close()
        os.replace(self.temporary, self.target)
        return self.path

    def keep_partial(self) -> Path:
        """The rows written so far, complete (a .json one a valid list), as FILE.partial
        (or the first free FILE-N.partial)."""
        self._close()
        try:
            return _place(self.temporary, self.target.parent, self.target.name, ".partial")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temporary)

    def _close(self) -> None:
        if not self._file.closed:
            if self.json:
                self._file.write("\n]\n" if self.count else "]\n")
            self._file.close()


def _cell(text: str) -> str:
    return spreadsheet_safe(printable(text))


def _text(value: Any, escape: Callable[[str], str]) -> Any:
    return escape(value) if isinstance(value, str) else value
