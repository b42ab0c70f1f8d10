"""Files the commands write for a user, none of them ever written over by accident.

`write_new` puts a new file in a folder under a name nobody holds (pic.png taken:
pic-1.png), whole or not at all: it is written under a temporary name and linked to
its own name only when complete, which fails rather than replaces when the name is
taken, by a file or a link.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

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
