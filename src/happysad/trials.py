"""The record of one trial, as the sweep keeps it: built once, when the trial ends (or,
for a continued sweep, from its MLflow run), and read by the report, the summary and
the choice of the best trial."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrialRecord:
    trial_id: str
    run_id: str | None
    status: str  # FINISHED or FAILED (MLflow's run status)
    score: float | None = None  # the objective, for a finished trial
    seconds: float | None = None
    started: float | None = None  # time.time() when its run started (a recorded trial's)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # why it failed
    model_uri: str | None = None
    pruned: str | None = None  # a finished trial that pruning stopped: the epoch, rule, figures

    @property
    def scored(self) -> bool:
        return self.score is not None and math.isfinite(self.score)


def best_by(records: list[TrialRecord], maximize: bool) -> TrialRecord | None:
    """The best scored trial, by the objective's direction."""
    scored = [r for r in records if r.scored]
    if not scored:
        return None
    return (max if maximize else min)(scored, key=lambda r: r.score)
