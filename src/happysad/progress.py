"""What a person watching the console sees while a sweep runs."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("happysad")

SHOWN_METRICS = ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc")


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Console:
    """Trial k of n, its hyperparameters, epochs, best so far, elapsed and remaining time."""

    def __init__(self, planned_trials: int | None, objective: str, done: int = 0):
        self.planned = planned_trials
        self.objective = objective
        self.started = time.monotonic()
        self.durations: list[float] = []
        self.begun = done  # trials an earlier run of this sweep finished

    def trial_begin(self, trial_id: str, hyperparameters: dict[str, Any]) -> None:
        self.begun += 1
        of = f" of {self.planned}" if self.planned else ""
        log.info("")
        log.info(f"trial {self.begun}{of} (trial-{trial_id})")
        for name, v in hyperparameters.items():
            log.info(f"  {name:<28} {value(v)}")

    def epoch(
        self, epoch: int, epochs: int | None, metrics: dict[str, float], seconds: float
    ) -> None:
        shown = "  ".join(f"{k} {metrics[k]:.4f}" for k in SHOWN_METRICS if k in metrics)
        of = f"/{epochs}" if epochs else ""
        log.info(f"  epoch {epoch + 1}{of}  {shown}  ({seconds:.1f} s)")

    def trial_end(
        self,
        trial_id: str,
        seconds: float,
        score: float | None,
        reason: str | None,
        best: tuple[str, float] | None,
    ) -> None:
        self.durations.append(seconds)
        if reason is None:
            outcome = f"{self.objective} {score:.4f}"
        else:
            outcome = f"FAILED: {reason}"
        best_text = f"best {best[1]:.4f} (trial-{best[0]})" if best else "no finished trial yet"
        elapsed = time.monotonic() - self.started
        left = ""
        if self.planned:
            remaining = max(self.planned - self.begun, 0)
            mean = sum(self.durations) / len(self.durations)
            left = f", about {duration(remaining * mean)} left"
        log.info(
            f"trial-{trial_id} done in {duration(seconds)}: {outcome} | {best_text} | "
            f"elapsed {duration(elapsed)}{left}"
        )
