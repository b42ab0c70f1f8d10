"""Pruning: a losing trial stops before its last epoch, for every tuner.

The decision is taken after each epoch by whoever runs the trial (a local sweep, or a
distributed sweep's worker), from the per-epoch objective the sweep records in MLflow
for every trial: so it is the same for a local sweep, for the workers of a distributed
one, and for a continued sweep, whose earlier trials' histories are in the store.

- `median` (as Optuna's MedianPruner): from `tuner.pruning_warmup` epochs on, a trial
  whose best objective so far is worse than the median of the other trials' best up to
  the same epoch stops.
- `asha` (asynchronous successive halving, Li et al. 2020): rungs at r, r*eta, r*eta^2
  ... epochs (r = `tuner.pruning_warmup`, eta = `tuner.pruning_eta`); a trial that
  reaches a rung goes on only if it is in the top 1/eta of the trials that reached it
  so far. Nobody waits for anybody: a trial is judged against what is recorded.

A trial is judged only against at least MIN_PEERS others that reached the same epoch,
and never at its last planned epoch (stopping there would save nothing). A pruned
trial keeps its best epoch: keras-tuner scores it with its best objective so far.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from typing import Any

from happysad.config.schema import Config, Pruning
from happysad.tracking.runs import SweepRun

log = logging.getLogger("happysad")

# Other trials needed at an epoch before a trial is judged there: fewer, and the first
# trials of a sweep would be stopped on one rival's luck.
MIN_PEERS = 2


@dataclass(frozen=True)
class Pruned:
    """Why a trial stopped: the tag `happysad.pruned` holds `text`."""

    epoch: int  # epochs trained when it stopped (1 = after the first)
    rule: str
    text: str  # the rule and the figures it compared


def _better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def _best(values: list[float], maximize: bool) -> float:
    return max(values) if maximize else min(values)


def rungs(warmup: int, eta: int, epochs: int) -> list[int]:
    """asha's rungs: the epoch counts at which trials are judged, below `epochs`."""
    out, r = [], warmup
    while r < epochs:
        out.append(r)
        r *= eta
    return out


def decide(
    rule: Pruning,
    own: list[float],
    others: list[list[float]],
    *,
    objective: str,
    maximize: bool,
    warmup: int,
    eta: int,
    epochs: int,
) -> Pruned | None:
    """Whether a trial whose objective per epoch so far is `own` stops now, against the
    other trials' objective per epoch (`others`, as recorded so far); None: it goes on."""
    n = len(own)
    if rule is Pruning.none or n < warmup or n >= epochs:
        return None
    if rule is Pruning.asha and n not in rungs(warmup, eta, epochs):
        return None
    peers = [_best(o[:n], maximize) for o in others if len(o) >= n]
    if len(peers) < MIN_PEERS:
        return None
    mine = _best(own, maximize)
    if rule is Pruning.median:
        median = statistics.median(peers)
        if not _better(median, mine, maximize):
            return None
        return Pruned(
            n,
            rule.value,
            f"epoch {n}, rule median: its best {objective} {mine:.4f} is "
            f"{'below' if maximize else 'above'} the median {median:.4f} of {len(peers)} other "
            f"trials' best up to epoch {n} ({_figures(peers, maximize)})",
        )
    keep = max(1, (len(peers) + 1) // eta)
    rank = 1 + sum(_better(p, mine, maximize) for p in peers)
    if rank <= keep:
        return None
    cutoff = sorted(peers, reverse=maximize)[keep - 1]
    return Pruned(
        n,
        rule.value,
        f"epoch {n}, rule asha (eta {eta}): its best {objective} {mine:.4f} ranks {rank} of "
        f"{len(peers) + 1} trials at the rung of epoch {n}, where only the top {keep} go on "
        f"(cutoff {cutoff:.4f}; the others: {_figures(peers, maximize)})",
    )


def _figures(values: list[float], maximize: bool) -> str:
    return ", ".join(f"{v:.4f}" for v in sorted(values, reverse=maximize))


class Pruner:
    """Judges the trial in progress after each of its epochs, from the sweep's records."""

    def __init__(self, cfg: Config, sweep: SweepRun):
        self.tuner = cfg.tuner
        self.sweep = sweep
        self.objective = cfg.tuner.objective.value
        self.maximize = cfg.tuner.objective.direction == "max"

    @property
    def active(self) -> bool:
        return self.tuner.pruning is not Pruning.none

    def judge(self, own: list[float], epochs: int) -> Pruned | None:
        """Whether the trial in progress, with the objective per epoch `own` of the
        `epochs` it would train, stops now. The store is read only at a decision point."""
        t = self.tuner
        if not self.active or not _decision_point(t, len(own), epochs):
            return None
        try:
            others = self.sweep.trial_histories(self.objective)
        except Exception as err:  # noqa: BLE001 - no record to compare with: the trial goes on
            log.warning(f"pruning could not read the other trials' histories ({err}): no pruning")
            return None
        return decide(
            t.pruning,
            own,
            list(others.values()),
            objective=self.objective,
            maximize=self.maximize,
            warmup=t.pruning_warmup,
            eta=t.pruning_eta,
            epochs=epochs,
        )


def _decision_point(t: Any, n: int, epochs: int) -> bool:
    if n < t.pruning_warmup or n >= epochs:
        return False
    return t.pruning is not Pruning.asha or n in rungs(t.pruning_warmup, t.pruning_eta, epochs)
