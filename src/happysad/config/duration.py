"""Durations as a user writes them in a config (`tuner.time_budget=1h30m`)."""

from __future__ import annotations

import re

from happysad.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse(text: str, key: str = "tuner.time_budget") -> float:
    """'30m', '2h', '1h30m', '90s' -> seconds; a ConfigError naming `key` for anything else."""
    compact = str(text).strip().lower().replace(" ", "")
    parts = _PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"{key}={text!r} is not a duration: write it like 30m, 2h, 1h30m or 90s")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"{key}={text!r} must be above zero")
    return seconds


def describe(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"
