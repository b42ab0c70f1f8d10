"""A named sweep's identity on disk, so that running the same command again continues it.

`<sweep.dir>/<sweep.name>/` holds keras-tuner's own state (its oracle and trials) and
`happysad.json`: the MLflow parent run and experiment of the sweep, and the
fingerprint of what makes its trials comparable: the search space, the data (the
digest of its decoded pixels) and the tuner. A sweep continues only under the same
fingerprint; what changed is named otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from happysad.config import search_space
from happysad.config.schema import Config
from happysad.errors import ConfigError

STATE_FILE = "happysad.json"


@dataclass
class SweepState:
    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    fingerprint: dict[str, dict[str, str]]


def fingerprint(cfg: Config, data_digest: str) -> dict[str, dict[str, str]]:
    """What must stay the same for the trials of one sweep to be comparable. The
    budgets (tuner.max_trials, tuner.time_budget) may change: raising one is how a
    sweep is extended; so may pruning, which stops trials but scores them alike (a
    continued sweep may start pruning, against the trials recorded before)."""
    space = search_space.summary(cfg)
    space["model.padding"] = cfg.model.padding.value
    space["augmentation.flip"] = str(cfg.augmentation.flip)
    space["model.test_time_flip"] = str(cfg.model.test_time_flip)
    tuner = {
        f"tuner.{k}": _text(v)
        for k, v in asdict(cfg.tuner).items()
        if k not in ("max_trials", "time_budget", "pruning", "pruning_warmup", "pruning_eta")
    }
    tuner["seed"] = str(cfg.seed)
    return {"search space": space, "data": {"data digest": data_digest}, "tuner": tuner}


def _text(value: Any) -> str:
    return value.value if isinstance(value, Enum) else str(value)


def changes(old: dict[str, dict[str, str]], new: dict[str, dict[str, str]]) -> list[str]:
    """What differs, as 'tuner: tuner.name random -> hyperband'."""
    out = []
    for part in new:
        before, after = old.get(part, {}), new[part]
        for key in sorted(before.keys() | after.keys()):
            if before.get(key) != after.get(key):
                out.append(
                    f"{part}: {key} {before.get(key, '(none)')} -> {after.get(key, '(none)')}"
                )
    return out


def folder(cfg: Config) -> Path:
    return Path(cfg.sweep.dir) / cfg.sweep.name


def read(cfg: Config) -> SweepState | None:
    """The state of the named sweep, None for a new one; raises ConfigError for a folder
    that is not a happysad sweep's."""
    where = folder(cfg)
    path = where / STATE_FILE
    if not path.is_file():
        if where.exists() and any(where.iterdir()):
            raise ConfigError(
                f"{where} exists but holds no happysad sweep ({STATE_FILE} is missing): "
                "choose another sweep.name, or move that folder away"
            )
        return None
    try:
        return SweepState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"{path} is damaged ({err}): add sweep.restart=true to start sweep "
            f"'{cfg.sweep.name}' afresh"
        ) from err


def check_continuable(
    state: SweepState, cfg: Config, new_fingerprint: dict, tracking_uri: str
) -> None:
    """Refuse to continue a sweep whose trials would not be comparable with the new ones."""
    name = cfg.sweep.name
    changed = changes(state.fingerprint, new_fingerprint)
    if changed:
        raise ConfigError(
            f"sweep '{name}' cannot go on with a different setup; changed: {'; '.join(changed)}. "
            f"Use another sweep.name, or add sweep.restart=true to start '{name}' afresh"
        )
    if state.tracking_uri != tracking_uri:
        raise ConfigError(
            f"sweep '{name}' was recorded in {state.tracking_uri}, not {tracking_uri}: "
            "continue it against that store (mlflow.tracking_uri), or add sweep.restart=true"
        )


def write(cfg: Config, state: SweepState) -> None:
    where = folder(cfg)
    where.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=where)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(state), f, indent=2)
    os.replace(tmp, where / STATE_FILE)


def clear(cfg: Config) -> None:
    """Forget the named sweep's keras-tuner state: sweep.restart=true."""
    shutil.rmtree(folder(cfg), ignore_errors=True)
