"""The MLflow model registry, as promote uses it: registered versions, their tags,
and the aliases `champion` and `previous`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from happysad.tracking import names
from happysad.tracking.store import Store, sqlite_path

log = logging.getLogger("happysad")
LOCK_SUFFIX = ".promote.lock"  # beside a local store's database: mlflow.db.promote.lock


def version_by_alias(store: Store, name: str, alias: str) -> Any | None:
    """The version of registered model `name` with `alias`; None when there is no such
    model or alias yet."""
    from mlflow.exceptions import MlflowException

    try:
        return store.client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def version_of_run(store: Store, name: str, run_id: str) -> str | None:
    """The version of `name` registered from the trial run `run_id`, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = store.client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None  # no registered model of that name yet
    for version in versions:
        if version.tags.get(names.SOURCE_RUN_ID) == run_id:
            return str(version.version)
    return None


def register(store: Store, name: str, model_uri: str, tags: dict[str, str]) -> str:
    """A new version of `name` (created with the model if need be); its number."""
    import mlflow

    with store.scoped():  # the registry resolves a logged model's URI through the store
        version = mlflow.register_model(model_uri, name, tags=tags)
    return str(version.version)


def set_alias(store: Store, name: str, alias: str, version: str) -> None:
    store.client.set_registered_model_alias(name, alias, version)


@contextlib.contextmanager
def gate(store: Store) -> Iterator[bool]:
    """One promotion at a time in a local SQLite store: a file lock beside its database,
    held while a promote reads the champion, decides and moves the aliases, so that two
    promotes at once cannot both decide against the same old champion. True when held;
    False for a tracking server (or where there are no file locks), whose promotes
    check again after they write (promote.py)."""
    database = sqlite_path(store.uri)
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        fcntl = None
    if database is None or fcntl is None:
        yield False
        return
    with open(f"{database}{LOCK_SUFFIX}", "a") as lock:  # "a": never truncates a file
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another promote of this store to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# MLflow's SQL stores keep a version's description in a column of 5,000 characters.
DESCRIPTION_LIMIT = 5000


def describe(store: Store, name: str, version: str, text: str, run_id: str, file: str) -> None:
    """`text` logged as `file` on `run_id` and shown as the version's description (cut
    short, with a pointer to the file, where it is longer than a description may be)."""
    store.client.log_text(run_id, text, file)
    if len(text) > DESCRIPTION_LIMIT:
        tail = f"\n\n... (the whole text: {file} on run {run_id})\n"
        text = text[: DESCRIPTION_LIMIT - len(tail)] + tail
    store.client.update_model_version(name, version, description=text)
