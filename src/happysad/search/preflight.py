"""Checks, in seconds and before the first trial, of what would otherwise fail later.

The data is checked by loading it (a missing folder fails at once, before anything
heavy is imported); this module checks the rest: the packages keras-tuner needs, a
store that can be written, and the disk the sweep's models will take.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Any

from happysad.errors import StoreError
from happysad.model.architecture import largest_parameter_count
from happysad.tracking.store import Store, check_reachable, local_artifact_root

# keras-tuner 1.4.8 marks every trial invalid, silently, when tensorboard is missing.
REQUIRED = {
    "tensorflow": "TensorFlow",
    "keras_tuner": "keras-tuner",
    "tensorboard": "tensorboard (keras-tuner fails every trial without it)",
    "mlflow": "MLflow",
}
# Each trial keeps two copies of its weights: keras-tuner's checkpoint and the MLflow
# model; a little is added for plots, metadata and the tuner's own files.
COPIES_PER_TRIAL = 2
SLACK_BYTES = 50 * 2**20


def check_packages() -> None:
    missing = [
        name for module, name in REQUIRED.items() if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise StoreError(
            f"missing packages: {', '.join(missing)}. Install happysad's dependencies: "
            "pip install -e . (or make sweep, which does it)"
        )


def check_store(tracking_uri: str, artifact_dir: Path | None) -> None:
    """A local store's folder must be writable; a server must answer its health check."""
    if artifact_dir is None:
        check_reachable(tracking_uri)
        return
    try:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=artifact_dir, prefix=".happysad-write-check-"):
            pass
    except OSError as err:
        raise StoreError(
            f"the MLflow store's folder {artifact_dir} is not writable ({err.strerror}): "
            "choose another mlflow.tracking_uri, or fix the folder's permissions"
        ) from err


def needed_bytes(cfg: Any, channels: int) -> int:
    """A generous estimate of the disk the sweep's models take."""
    params = largest_parameter_count(cfg, channels)
    return params * 4 * COPIES_PER_TRIAL * cfg.tuner.max_trials + SLACK_BYTES


def check_disk(cfg: Any, channels: int, folders: list[Path]) -> None:
    needed = needed_bytes(cfg, channels)
    for folder in folders:
        existing = _existing_parent(folder)
        free = shutil.disk_usage(existing).free
        if free < needed:
            raise StoreError(
                f"{existing} has {free / 2**20:.0f} MiB free, but the sweep's models may take about "
                f"{needed / 2**20:.0f} MiB ({cfg.tuner.max_trials} trials): free some space, or lower "
                "tuner.max_trials or the model sizes"
            )


def _existing_parent(folder: Path) -> Path:
    folder = folder.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def open_store(configured_uri: str | None) -> Store:
    """The store a command writes to, by the one rule every command follows, checked
    before anything heavy runs: its folder writable, or its server answering."""
    check_packages()
    store = Store.resolve(configured_uri)
    check_store(store.uri, local_artifact_root(store.uri))
    return store
