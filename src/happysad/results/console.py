"""What a person watching the console sees while a sweep runs, from its data to
the closing summary."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from happysad.data.dataset import CLASS_NAMES

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
        self.deadline: float | None = None  # time.time() when the time budget runs out

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

    def pruned(self, why: str) -> None:
        log.info(f"  pruned: {why}")

    def trial_end(
        self,
        trial_id: str,
        seconds: float,
        score: float | None,
        reason: str | None,
        best: tuple[str, float] | None,
        pruned: int | None = None,  # the epoch pruning stopped it after
    ) -> None:
        self.durations.append(seconds)
        if reason is None:
            outcome = f"{self.objective} {score:.4f}"
            if pruned is not None:
                outcome += f" (pruned after epoch {pruned})"
        else:
            outcome = f"FAILED: {reason}"
        best_text = f"best {best[1]:.4f} (trial-{best[0]})" if best else "no finished trial yet"
        elapsed = time.monotonic() - self.started
        left = ""
        if self.planned:
            remaining = max(self.planned - self.begun, 0)
            mean = sum(self.durations) / len(self.durations)
            estimate = remaining * mean
            if self.deadline is not None:  # the time budget ends it sooner
                estimate = min(estimate, max(self.deadline - time.time(), 0))
            left = f", about {duration(estimate)} left"
        log.info(
            f"trial-{trial_id} done in {duration(seconds)}: {outcome} | {best_text} | "
            f"elapsed {duration(elapsed)}{left}"
        )


def data_summary(images) -> None:
    """The data a sweep trains on, what was skipped and why, the class weights."""
    s = images.summary()
    p = images.preprocessing
    log.info(
        f"data: {s['path']} ({p.image_size}x{p.image_size} {p.color_mode}, digest {s['digest']}"
        f"{', decoded earlier' if images.from_cache else ''}): train {s['train_images']} "
        f"(happy {s['train_happy']}, sad {s['train_sad']}), validation {s['val_images']}, "
        f"test {s['test_images']}"
    )
    if images.skipped:
        reasons = ", ".join(f"{n} {kind}" for kind, n in images.skipped_by_reason().most_common())
        log.warning(
            f"skipped {len(images.skipped)} files: {reasons} "
            "(each listed with its reason in the sweep's data/skipped_files.csv)"
        )
    dropped = images.duplicates.get("dropped_across_splits", 0)
    if dropped:
        log.warning(
            f"{dropped} exact duplicates that would sit on both sides of a split were kept on one side only"
        )
    if images.class_weight:
        weights = ", ".join(
            f"{CLASS_NAMES[c]} {w:.2f}" for c, w in sorted(images.class_weight.items())
        )
        log.info(f"class weights (data.class_weight=balanced): {weights}")


def sweep_summary(result: Any, cfg: Any, seconds: float) -> None:
    """The end of a sweep: trials, the best, its test metrics, and the next commands."""
    objective = cfg.tuner.objective.value
    finished = len(result.results) - len(result.failed)
    log.info("")
    log.info(
        f"sweep '{result.name}' done in {duration(seconds)}: {len(result.results)} "
        f"trial{'' if len(result.results) == 1 else 's'}, "
        f"{finished} finished{_pruned(result.results)}, {len(result.failed)} failed"
    )
    if result.budget_ended:
        log.info(result.budget_ended)
    best = result.best
    if best is not None:
        log.info(f"best: trial-{best.trial_id} with {objective} {best.score:.4f}")
        for key, v in best.hyperparameters.items():
            log.info(f"  {key:<28} {value(v)}")
        if result.test_metrics:
            shown = "  ".join(
                f"{k.removeprefix('test_')} {v:.4f}" for k, v in result.test_metrics.items()
            )
            log.info(f"test split (never used for selection): {shown}")
    log.info(f"MLflow parent run: {result.parent_run_id} (experiment id {result.experiment_id})")
    if result.tracking_uri.startswith(("http://", "https://")):
        runs_page = f"#/experiments/{result.experiment_id}/runs"
        log.info(f"see the runs in the MLflow UI: {result.tracking_uri.rstrip('/')}/{runs_page}")
    # The next commands, each told this sweep's store as every happysad command finds it.
    run = f"MLFLOW_TRACKING_URI={result.tracking_uri} {beside_python('python')} -m happysad."
    log.info("next:")
    steps = [
        ("ui", "the MLflow UI, open on this sweep"),
        (f"compare {result.name}", "this sweep's top trials side by side"),
        (f"promote sweep.name={result.name}", "register its best model, champion if it earns it"),
        ("predict photo.jpg album/", "find and classify the faces in photos with the champion"),
    ]
    if best is None or not best.model_uri:
        steps = steps[:2]
    width = max(len(command) for command, _ in steps)
    for command, what in steps:
        log.info(f"  {run}{command:<{width}}  # {what}")


def _pruned(results: list) -> str:
    pruned = sum(getattr(r, "pruned", None) is not None for r in results)
    return f" ({pruned} of them pruned)" if pruned else ""


def beside_python(program: str) -> str:
    """A program of this environment, as a path to type from here (.venv/bin/mlflow)."""
    path = Path(sys.executable).parent / program
    if not path.exists():
        return program
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
