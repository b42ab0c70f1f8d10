"""The picture files that command-line PATHs name: a file, a folder (every file below
it, hidden ones left out) or a glob pattern (`**` for any depth of folders).

A listing always ends and names each real file once per PATH: links to folders are
followed, but each real folder is entered once (st_dev, st_ino), so a link loop ends
and a second way into a folder lists nothing twice. What is not a regular file (a FIFO,
a socket, a device, a link that leads nowhere) is listed all the same, so that its row
says why it was not read instead of it vanishing; it is never opened here.
"""

from __future__ import annotations

import fnmatch
import heapq
import os
import re
import stat

_MAGIC = re.compile(r"[*?[]")
NO_MATCH = "no such file or folder, and no file matches it as a pattern"


def expand(patterns: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The files the PATH arguments name, in their order (each PATH's files sorted), and
    (path, reason) for each PATH that names none and each link not followed."""
    files: list[str] = []
    notes: list[tuple[str, str]] = []
    for pattern in patterns:
        found, noted = _expand_one(pattern)
        files += found
        notes += noted
    return files, notes


def _expand_one(pattern: str) -> tuple[list[str], list[tuple[str, str]]]:
    try:
        found = os.stat(pattern)
    except OSError:
        found = None
    if found is not None and stat.S_ISDIR(found.st_mode):
        return walk(pattern)
    if found is not None or os.path.lexists(pattern):
        return [pattern], []  # a file, or something the reader will say is not one
    if _MAGIC.search(pattern):
        matches = glob(pattern)
        if matches:
            return matches, []
    return [], [(pattern, NO_MATCH)]


def walk(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Every non-folder below `root` (hidden names left out), sorted, each real file once;
    a link to a folder already listed gets a note instead of being entered again.
    Folders reached through fewer links are entered first, so a real folder keeps its
    own path and the link to it gets the note."""
    seen: set[tuple[int, int]] = set()
    entries: list[tuple[int, str, tuple[int, int] | None]] = []
    notes: list[tuple[str, str]] = []
    pending = [(0, root)]
    while pending:
        links, folder = heapq.heappop(pending)
        try:
            here = _identity(os.stat(folder))
            with os.scandir(folder) as listing:
                items = list(listing)
        except OSError as err:
            notes.append((folder, f"a folder that cannot be listed: {err.strerror}"))
            continue
        if here in seen:
            notes.append((folder, "a link to a folder already listed: not entered again"))
            continue
        seen.add(here)
        for item in items:
            if item.name.startswith("."):
                continue
            crossed = links + item.is_symlink()
            try:
                found = os.stat(item.path)  # through links
            except OSError:
                entries.append((crossed, item.path, None))  # a link to nothing: its row says so
                continue
            if stat.S_ISDIR(found.st_mode):
                heapq.heappush(pending, (crossed, item.path))
            else:
                entries.append((crossed, item.path, _identity(found)))
    return _once(entries), sorted(notes)


def glob(pattern: str) -> list[str]:
    """The non-folders that match `pattern`, sorted, each real file once, as Python's
    glob(recursive=True) matches them (hidden names only where the pattern names them),
    except that each folder is entered once per place in the pattern, so link loops end."""
    absolute = pattern.startswith(os.sep)
    parts = [p for p in pattern.split(os.sep) if p]
    fixed = 0
    while fixed < len(parts) - 1 and not _MAGIC.search(parts[fixed]):
        fixed += 1
    head = os.sep.join(parts[:fixed])
    head = os.sep + head if absolute else head
    entries: list[tuple[int, str, tuple[int, int] | None]] = []
    visited: set[tuple[tuple[int, int], int]] = set()
    pending = [(0, head, fixed)]
    while pending:
        links, folder, place = heapq.heappop(pending)
        try:
            here = _identity(os.stat(folder or os.curdir))
            with os.scandir(folder or os.curdir) as listing:
                items = list(listing)
        except OSError:
            continue  # not a folder, gone or unreadable: nothing matches below it
        if (here, place) in visited:
            continue
        visited.add((here, place))
        part, last = parts[place], place == len(parts) - 1
        if part == "**":
            if not last:
                heapq.heappush(pending, (links, folder, place + 1))  # `**` as no folder at all
        hidden = part.startswith(".")
        for item in items:
            if part == "**":
                if item.name.startswith("."):
                    continue
                follow = place
            elif (hidden or not item.name.startswith(".")) and fnmatch.fnmatchcase(item.name, part):
                follow = place + 1
            else:
                continue
            path = os.path.join(folder, item.name)
            crossed = links + item.is_symlink()
            try:
                found = os.stat(path)
            except OSError:
                found = None
            if found is not None and stat.S_ISDIR(found.st_mode):
                if follow < len(parts):
                    heapq.heappush(pending, (crossed, path, follow))
            elif last:  # folders match too, but are no pictures
                entries.append((crossed, path, found and _identity(found)))
    return _once(entries)


def _identity(found: os.stat_result) -> tuple[int, int]:
    return found.st_dev, found.st_ino


def _once(entries: list[tuple[int, str, tuple[int, int] | None]]) -> list[str]:
    """The paths sorted, a real file reached by two paths kept at the one through the
    fewest links (then the first in order)."""
    seen: set[tuple[int, int]] = set()
    out = []
    for _, path, identity in sorted(entries, key=lambda entry: entry[:2]):
        if identity is not None:
            if identity in seen:
                continue
            seen.add(identity)
        out.append(path)
    return sorted(out)
