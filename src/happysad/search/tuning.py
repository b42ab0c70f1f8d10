"""keras-tuner's search, with every trial recorded in MLflow and shown on the console.

The tracking rides on keras-tuner's own lifecycle: a trial's MLflow run is opened
in `on_trial_begin`; `run_trial` has the trial trained (its job assembled by
`training.Jobs`, run in its own process), logging one row of metrics per epoch as each
ends; the run is closed in `on_trial_end` once the oracle has scored the trial,
FINISHED with its plots and model, or FAILED with the reason keras-tuner would
otherwise swallow. What keras-tuner does not offer publicly is kt_internals'.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras_tuner as kt

from happysad.config.schema import HEARTBEAT, SEED_LIMIT, Config, TunerName
from happysad.model.hypermodel import FaceHyperModel
from happysad.results import plots, report
from happysad.results.console import Console
from happysad.search import kt_internals, training
from happysad.search.budget import Budget
from happysad.search.pruning import Pruned, Pruner
from happysad.tracking import names
from happysad.tracking.names import FAILED, FINISHED
from happysad.tracking.runs import SweepRun
from happysad.trials import TrialRecord, best_by

log = logging.getLogger("happysad")


def objective(cfg: Config) -> kt.Objective:
    return kt.Objective(cfg.tuner.objective.value, direction=cfg.tuner.objective.direction)


def tuner_kwargs(cfg: Config) -> dict[str, Any]:
    """The algorithm's own settings, by tuner name."""
    t = cfg.tuner
    common = {
        "objective": objective(cfg),
        "seed": oracle_seed(cfg.seed),
        "max_consecutive_failed_trials": t.max_consecutive_failures,
    }
    if t.name is TunerName.hyperband:
        return {
            **common,
            "max_epochs": t.epochs,
            "factor": t.factor,
            "hyperband_iterations": t.iterations,
        }
    if t.name is TunerName.bayesian:
        return {
            **common,
            "max_trials": t.max_trials,
            "num_initial_points": t.num_initial_points,
            "alpha": t.alpha,
            "beta": t.beta,
        }
    return {**common, "max_trials": t.max_trials}


def oracle_seed(seed: int) -> int:
    """The seed keras-tuner's oracle gets. It takes 0 for 'no seed' and draws a random
    one, so seed=0 would give another trial sequence on every run: 0 goes in as
    SEED_LIMIT, which no seed can be, and which numpy still takes (Bayesian search)."""
    return seed or SEED_LIMIT


BASE_TUNERS = {
    TunerName.random: kt.RandomSearch,
    TunerName.bayesian: kt.BayesianOptimization,
    TunerName.hyperband: kt.Hyperband,
    TunerName.grid: kt.GridSearch,
}


def make_tuner(
    cfg: Config,
    hypermodel: FaceHyperModel,
    directory: str,
    project_name: str,
    sweep: SweepRun | None = None,
    jobs: training.Jobs | None = None,
    previous: list[TrialRecord] | None = None,
    budget: Budget | None = None,
) -> kt.Tuner:
    """The configured keras-tuner tuner; with `sweep` and `jobs`, one that trains its
    trials as `jobs` says and records them in MLflow.

    With an existing project folder, keras-tuner reloads it and goes on where it
    stopped (an interrupted trial runs again); `previous` are the trials already
    recorded, for 'trial k of n' and the best so far."""
    kt_internals.quiet()
    kwargs = {
        **tuner_kwargs(cfg),
        "directory": directory,
        "project_name": project_name,
        "overwrite": False,
    }
    with hypermodel.discovering():  # keras-tuner builds models in its constructor
        if sweep is None:
            tuner = BASE_TUNERS[cfg.tuner.name](hypermodel=hypermodel, **kwargs)
        else:
            tuner = TRACKED_TUNERS[cfg.tuner.name](
                hypermodel=hypermodel,
                sweep=sweep,
                cfg=cfg,
                jobs=jobs,
                previous=previous or [],
                budget=budget,
                **kwargs,
            )
    if cfg.tuner.name is TunerName.hyperband:
        # keras-tuner's Hyperband has no trial budget of its own; tuner.max_trials is one.
        tuner.oracle.max_trials = cfg.tuner.max_trials
    return tuner


def planned_trials(tuner: kt.Tuner, cfg: Config) -> int:
    """How many trials the search will run at most, for 'trial k of n'."""
    oracle = tuner.oracle
    if kt_internals.is_worker() and cfg.tuner.name is not TunerName.grid:
        return cfg.tuner.max_trials  # a worker's oracle is the chief's, over gRPC
    if cfg.tuner.name is TunerName.hyperband:
        per_iteration = kt_internals.hyperband_trials(oracle)
        return min(cfg.tuner.max_trials, per_iteration * cfg.tuner.iterations)
    if cfg.tuner.name is TunerName.grid:
        space = oracle.get_space()
        combos = 1
        for hp in space.space:
            if not hp.conditions:
                combos *= len(list(hp.values)) if hasattr(hp, "values") else 1
        return min(cfg.tuner.max_trials, combos)
    return cfg.tuner.max_trials


def active_values(hp: kt.HyperParameters) -> dict[str, Any]:
    """The hyperparameters this trial really uses, model first and in declaration order
    within a section; conditional ones only when active; Hyperband's `tuner/...` last."""
    active = [h.name for h in hp.space if h.name in hp.values and hp.is_active(h)]
    active += [name for name in hp.values if name.startswith("tuner/") and name not in active]
    rank = {section: i for i, section in enumerate(["model", "augmentation", "optimizer", "data"])}
    ordered = sorted(active, key=lambda name: rank.get(name.split(".")[0], len(rank)))
    return {name: _tidy(hp.values[name]) for name in ordered}


def _tidy(v: Any) -> Any:
    # Stepped float ranges give values like 0.30000000000000004; record them as 0.3.
    return float(f"{v:.10g}") if isinstance(v, float) else v


def failure_reason(message: str | None) -> str:
    """The last line of keras-tuner's traceback, for a failure raised outside the trial's
    training (whose own exception gives the reason directly): the exception and its message."""
    lines = [line.strip() for line in (message or "").strip().splitlines() if line.strip()]
    if not lines:
        return "the trial failed without a message"
    reason = lines[-1]
    for prefix in ("keras_tuner.src.errors.", "keras_tuner.errors."):
        reason = reason.removeprefix(prefix)
    return reason.removeprefix("FailedTrialError: ")


def retry_unrecorded(oracle: Any, previous: list[TrialRecord]) -> None:
    """A continued sweep's trials that the oracle ended but the sweep never recorded
    (stopped in between) run again, with a line saying so."""
    again = kt_internals.retry_unrecorded(oracle, {r.trial_id for r in previous})
    if again:
        log.info(
            "the oracle had ended "
            + ", ".join(f"trial-{t}" for t in again)
            + " but the sweep stopped before recording it: it runs again"
        )


class TrackedTunerMixin:
    """Put before a keras-tuner Tuner class: records its trials in MLflow."""

    def __init__(
        self,
        *args,
        sweep: SweepRun,
        cfg: Config,
        jobs: training.Jobs,
        previous: list,
        budget: Budget | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.sweep = sweep
        self.budget = budget
        self.cfg = cfg
        self.jobs = jobs
        self.data = jobs.data
        self.console: Console | None = None
        self.results: list[TrialRecord] = list(previous)
        self.pruner = Pruner(cfg, sweep)
        self._model = None

    def on_search_begin(self):
        super().on_search_begin()
        # Each trial's figures are cyclic garbage holding megabytes of native image
        # buffers that Python's collector does not count, so they are collected after
        # every trial; freezing what exists now keeps that collection quick.
        gc.collect()
        gc.freeze()
        if not kt_internals.is_worker():  # a worker's oracle is the chief's
            retry_unrecorded(self.oracle, self.results)
        planned = planned_trials(self, self.cfg)
        self.console = Console(planned, self.cfg.tuner.objective.value, done=len(self.results))
        self.console.deadline = self.budget.deadline if self.budget else None
        self._check_budget()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._trial_started = time.monotonic()
        self._history: dict[str, list[float]] = defaultdict(list)
        self._epochs: list[int] = []
        self._outcome: training.TrialOutcome | None = None
        self._failure: tuple[str, str | None] | None = None  # reason, details
        self._pruned: Pruned | None = None
        values = active_values(trial.hyperparameters)
        self.console.trial_begin(trial.trial_id, values)
        tags = {
            names.SEED: str(self.cfg.seed),
            names.DATA_SEED: str(self.cfg.data.seed),
            names.DETERMINISTIC: str(self.cfg.deterministic),
        }
        if kt_internals.is_worker():  # a distributed sweep's worker
            tags[names.WORKER] = self.tuner_id
        backbone = self.hypermodel.backbones.get(values.get("model.backbone"))
        if backbone is not None:  # lineage: back to the pretraining run and its data
            tags |= {
                names.BACKBONE_URI: backbone.uri,
                names.BACKBONE_RUN_ID: backbone.run_id,
                names.BACKBONE_DATA_DIGEST: backbone.data_digest,
            }
        self.sweep.start_trial(trial.trial_id, values, tags=tags)

    def run_trial(self, trial, *args, **kwargs):
        """Train the trial (in its own process unless sweep.isolate_trials=false);
        keras-tuner scores it from the returned history."""
        hp = trial.hyperparameters
        earlier = hp.values.get("tuner/trial_id")  # Hyperband goes on from its weights
        job = self.jobs.for_trial(
            trial.trial_id,
            hp,
            checkpoint=kt_internals.checkpoint_path(self, trial.trial_id),
            build_config=kt_internals.build_config_path(self, trial.trial_id),
            warm_start=kt_internals.checkpoint_path(self, earlier) if earlier else None,
            folder=Path(self.get_trial_dir(trial.trial_id)).resolve(),
            run_id=self.sweep.trial_run_id,
        )
        self._planned_epochs = job.epochs
        try:
            with self._heartbeat(trial.trial_id):
                self._outcome = training.run(job, self._epoch_done, self.cfg.sweep.isolate_trials)
        except kt.errors.FailedTrialError as err:
            # keras-tuner keeps only the traceback's text: the reason is taken here.
            self._failure = (str(err), getattr(err, "details", None) or traceback.format_exc())
            raise
        finally:
            if job.log_path:
                try:
                    self.sweep.log_trial_file(job.log_path, "logs")
                except Exception as err:  # noqa: BLE001 - never in place of the trial's own end
                    log.warning(f"trial-{trial.trial_id}: its process log was not recorded: {err}")
        return self._outcome.keras_history()

    def _heartbeat(self, trial_id: str):
        """A distributed sweep's worker tells its chief it is alive while it trains."""
        if not kt_internals.is_worker():
            return contextlib.nullcontext()
        return heartbeat(self.oracle, trial_id)

    def _epoch_done(self, epoch: int, metrics: dict[str, float], seconds: float) -> bool:
        """Record an epoch; true when pruning stops the trial after it."""
        for name, v in metrics.items():
            self._history[name].append(v)
        self._epochs.append(epoch)
        self.sweep.log_epoch({**metrics, "epoch_time": seconds}, epoch)
        self.console.epoch(epoch, self._planned_epochs, metrics, seconds)
        own = self._history.get(self.cfg.tuner.objective.value, [])
        self._pruned = self.pruner.judge(own, self._planned_epochs or self.cfg.tuner.epochs)
        if self._pruned is not None:
            self.console.pruned(self._pruned.text)
        return self._pruned is not None

    def on_trial_end(self, trial):
        try:
            # The oracle scores the trial here; it raises when too many failed in a row.
            super().on_trial_end(trial)
        finally:
            self._record(self.oracle.get_trial(trial.trial_id))
            self._outcome = None

    def _record(self, trial) -> None:
        result = TrialRecord(
            trial_id=trial.trial_id,
            run_id=self.sweep.trial_run_id,
            status=FINISHED,
            hyperparameters=active_values(trial.hyperparameters),
        )
        outcome = self._outcome
        if trial.status == kt_internals.COMPLETED and outcome is not None and outcome.record_error:
            result.reason = f"recording the trial failed: {outcome.record_error}"
            self.sweep.end_trial(FAILED, result.reason, outcome.record_details)
        elif trial.status == kt_internals.COMPLETED and outcome is not None:
            try:
                self._log_finished(trial, outcome)
                result.model_uri = outcome.model_uri
                result.score = float(trial.score)
                if self._pruned is not None:
                    result.pruned = self._pruned.text
                    self.sweep.tag_trial({names.PRUNED: self._pruned.text})
                if outcome.stopped_by_budget:
                    epochs = len(outcome.epochs)
                    self.sweep.tag_trial(
                        {names.BUDGET: f"the time budget stopped it after {epochs} epochs"}
                    )
                self.sweep.end_trial(FINISHED)
            except Exception as err:  # noqa: BLE001 - recorded on the run, then the search goes on
                result.reason = f"recording the trial failed: {type(err).__name__}: {err}"
                self.sweep.end_trial(FAILED, result.reason, traceback.format_exc())
        else:
            reason, details = self._failure or (failure_reason(trial.message), trial.message)
            result.reason = reason
            self.sweep.end_trial(FAILED, reason, details)
        if result.reason:
            result.status = FAILED
        result.seconds = time.monotonic() - self._trial_started
        self.results.append(result)
        self.console.trial_end(
            trial.trial_id,
            result.seconds,
            result.score,
            result.reason,
            self._best(),
            pruned=self._pruned.epoch if self._pruned and not result.reason else None,
        )
        self._check_budget()
        gc.collect()

    def _check_budget(self) -> None:
        """End the search when a trial as long as the median one would not fit in the
        time budget left: keras-tuner's oracle then starts no new trial."""
        if self.budget is None or kt_internals.is_worker():
            return  # a distributed sweep's chief decides (distributed.keep_to_budget)
        ended = self.budget.end_unless_room([r.seconds for r in self.results if r.seconds])
        if ended:
            self.oracle.max_trials = max(len(self.oracle.trials), 1)
            log.info("")
            log.info(ended)

    def search(self, *args, **kwargs):
        try:
            return super().search(*args, **kwargs)
        finally:
            gc.unfreeze()

    def _best(self) -> tuple[str, float] | None:
        best = best_by(self.results, maximize=self.oracle.objective.direction == "max")
        return None if best is None else (best.trial_id, best.score)

    def _log_finished(self, trial, outcome: training.TrialOutcome) -> None:
        """What a finished trial records beside its model: report.py computes it."""
        val = report.evaluate_split(
            "val",
            self.data.val.y,
            outcome.probabilities,
            f"trial-{trial.trial_id}",
            self.data.val.x,
        )
        curves = plots.learning_curves(self._history, self._epochs, self.oracle.objective.name)
        self.sweep.log_trial_result(
            {
                "objective": float(trial.score),
                "best_epoch": float(trial.best_step),
                **{
                    f"val_{k}": val.metrics[k] for k in ("precision", "recall", "average_precision")
                },
            },
            {"plots/learning_curves.png": curves, **val.figures},
        )


class TrackedRandomSearch(TrackedTunerMixin, kt.RandomSearch):
    """Random search, every trial recorded."""


class TrackedBayesianOptimization(TrackedTunerMixin, kt.BayesianOptimization):
    """Bayesian optimisation, every trial recorded."""


class TrackedHyperband(TrackedTunerMixin, kt.Hyperband):
    """Hyperband, every trial recorded. The mixin's run_trial stands in for Hyperband's
    own, taking the epochs and the weights to go on from out of `tuner/...` values."""


class TrackedGridSearch(TrackedTunerMixin, kt.GridSearch):
    """Grid search, every trial recorded."""


TRACKED_TUNERS = {
    TunerName.random: TrackedRandomSearch,
    TunerName.bayesian: TrackedBayesianOptimization,
    TunerName.hyperband: TrackedHyperband,
    TunerName.grid: TrackedGridSearch,
}


@contextlib.contextmanager
def heartbeat(oracle, trial_id: str) -> Iterator[None]:
    """A worker's sign of life to the chief while it trains `trial_id`, every HEARTBEAT
    seconds (keras-tuner's client says nothing between a trial's start and end): the
    chief gives up on a worker it did not start only when it stops. A heartbeat that
    fails is not an error here: the worker's next call to the chief says what is wrong."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT):
            try:
                oracle.get_trial(trial_id)
            except Exception:  # noqa: BLE001, S112 - see above
                continue

    thread = threading.Thread(target=beat, name="happysad-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
