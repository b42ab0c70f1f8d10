"""A sweep's time budget (`tuner.time_budget=30m`): keras-tuner has none.

The budget counts the trials' time, across continued runs of the same sweep. The
sweep starts no trial it cannot finish in what is left, judging by the trials
measured so far (the median trial's time), and the trial running when the budget
runs out stops at the end of its last whole epoch that fits, or at the limit if the
epoch cannot, with its best epoch kept: keras-tuner scores it as any other trial.
A distributed sweep's trials run side by side: its budget counts the time during
which any ran (wall_time), its chief decides when no trial starts, and its workers
stop their trials at the chief's deadline.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from happysad.config.duration import describe


def wall_time(spans: Iterable[tuple[float, float]]) -> float:
    """Seconds during which at least one of the (start, end) spans ran: trials side by
    side count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


@dataclass
class Budget:
    """`total` seconds of trials, of which `spent` were used by earlier runs of the sweep."""

    total: float
    spent: float = 0.0
    started: float = field(default_factory=time.time)  # wall clock: trial processes share it
    ended: bool = False  # the budget stopped the search

    @classmethod
    def ending_at(cls, deadline: float, total: float) -> Budget:
        """The budget of a sweep whose clock another process keeps (a distributed sweep's
        chief): it runs out at `deadline`, in time.time() seconds."""
        now = time.time()
        return cls(total, spent=total - (deadline - now), started=now)

    @property
    def deadline(self) -> float:
        """When the budget runs out, in time.time() seconds."""
        return self.started + self.total - self.spent

    def left(self) -> float:
        return self.deadline - time.time()

    def used(self) -> float:
        return self.total - max(self.left(), 0.0)

    def end_unless_room(self, trial_seconds: list[float]) -> str | None:
        """End the budget when a trial as long as the median of those measured would not
        fit in what is left; returns the sentence that says so, once (None otherwise)."""
        if self.ended or self.room_for_another(trial_seconds):
            return None
        self.ended = True
        return (
            f"time budget: {describe(max(self.left(), 0))} of {describe(self.total)} left, "
            "less than a trial takes here"
            + (f" (median {describe(statistics.median(trial_seconds))})" if trial_seconds else "")
            + ": no new trial"
        )

    def room_for_another(self, trial_seconds: list[float]) -> bool:
        """Whether a trial as long as the median of those measured fits in what is
        left (with nothing measured yet, whether any time is left)."""
        needed = statistics.median(trial_seconds) if trial_seconds else 0.0
        return self.left() > needed
