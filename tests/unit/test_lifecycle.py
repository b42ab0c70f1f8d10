"""The tracked keras-tuner lifecycle end to end, in seconds: real keras-tuner, a real
SQLite store, and a stand-in trainer in place of Keras training.

The stand-in builds each trial's real model (so keras-tuner's checkpoint and the test
split's evaluation work as in a sweep) but trains nothing: it reports scripted epochs,
or fails, or hits a NaN loss, or is interrupted, as the test tells it."""

from __future__ import annotations

import time

import numpy as np
import pytest
from keras_tuner.errors import FailedTrialError
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from happysad.errors import SweepInterrupted
from happysad.search import training
from happysad.sweep import run_sweep
from happysad.tracking.names import BUDGET
from tests.conftest import compose_config

NAN = "the loss became nan at epoch 2, batch 1: optimizer.learning_rate=0.001 is likely too high"
KILLED_BY_OOM = "trial-1's process died of SIGKILL (Killed): killed, most often by the system"


@pytest.fixture
def plan(monkeypatch) -> list[tuple[str, float]]:
    """What the stand-in trainer does, trial by trial: (what, val_accuracy), what being
    finish, fail, nan or interrupt, or sleepS: finish after S seconds."""
    steps: list[tuple[str, float]] = []

    def stand_in(job: training.TrialJob, report, isolate: bool) -> training.TrialOutcome:
        import keras_tuner.src.utils as kt_utils

        from happysad.model.hypermodel import FaceHyperModel

        what, score = steps.pop(0)
        if what.startswith("sleep"):
            time.sleep(float(what.removeprefix("sleep")))
        model = FaceHyperModel(job.cfg, job.data.input_shape).build(job.hyperparameters)
        model.save_weights(job.checkpoint)
        kt_utils.save_json(job.build_config, model.get_build_config())
        history: dict[str, list[float]] = {}
        epochs = list(range(job.initial_epoch, job.epochs))
        for epoch in epochs:
            if what == "nan" and epoch == 1:
                raise FailedTrialError(NAN)
            metrics = {"loss": 0.7 - 0.1 * epoch, "accuracy": 0.5 + 0.1 * epoch}
            metrics |= {"val_loss": 0.7 - score / 10, "val_accuracy": score - 0.01 * (epoch == 0)}
            for name, value in metrics.items():
                history.setdefault(name, []).append(value)
            report(epoch, metrics, 0.01)
        if what == "fail":
            raise training.TrialProcessFailed(KILLED_BY_OOM, "the process's last lines")
        if what == "interrupt":
            raise KeyboardInterrupt
        probabilities = np.random.default_rng(len(steps)).random(len(job.data.val))
        return training.TrialOutcome(history, epochs, probabilities.astype(np.float32))

    monkeypatch.setattr(training, "run", stand_in)
    return steps


@pytest.fixture
def overrides(tiny) -> list[str]:
    """A tiny sweep trained by the stand-in, in the sweep's process, logging no models."""
    return [
        *tiny,
        "model.padding=same",
        "tuner.epochs=2",
        "mlflow.log_models=false",
        "sweep.isolate_trials=false",
    ]


def _runs(uri: str):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("happysad").experiment_id])
    parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    trials = sorted(
        (r for r in runs if MLFLOW_PARENT_RUN_ID in r.data.tags),
        key=lambda r: (r.info.run_name, r.info.start_time),
    )
    return client, parents, trials


def test_finished_failed_and_nan_trials_each_leave_their_run(plan, overrides, store_uri):
    plan += [("finish", 0.7), ("fail", 0.0), ("nan", 0.0), ("finish", 0.8)]
    result = run_sweep(compose_config([*overrides, "tuner.max_trials=4", "sweep.name=four"]))
    assert not plan, "every trial ran"
    assert result.best.trial_id == "3" and result.best.score == pytest.approx(0.8)
    assert "test_accuracy" in result.test_metrics

    client, (parent,), trials = _runs(store_uri)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["happysad.best_trial_id"] == "3"
    assert [(t.info.run_name, t.info.status) for t in trials] == [
        ("trial-0", "FINISHED"),
        ("trial-1", "FAILED"),
        ("trial-2", "FAILED"),
        ("trial-3", "FINISHED"),
    ]
    finished, oom, nan, best = trials
    assert finished.data.metrics["objective"] == pytest.approx(0.7)
    history = client.get_metric_history(finished.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [0, 1] and history[1].value == pytest.approx(0.7)
    assert oom.data.tags["happysad.failure"] == KILLED_BY_OOM
    assert nan.data.tags["happysad.failure"].startswith("the loss became nan at epoch 2")
    assert [m.step for m in client.get_metric_history(nan.info.run_id, "val_accuracy")] == [0]
    assert "objective" not in oom.data.metrics and "objective" not in nan.data.metrics
    assert best.data.metrics["objective"] == pytest.approx(0.8)
    # Every trial run carries its hyperparameters under their config names.
    assert all("model.depth" in t.data.params for t in trials)


def test_an_interrupted_sweep_is_killed_and_continues_where_it_stopped(plan, overrides, store_uri):
    plan += [("finish", 0.6), ("interrupt", 0.0)]
    with pytest.raises(SweepInterrupted, match="To go on where it stopped"):
        run_sweep(compose_config([*overrides, "tuner.max_trials=3", "sweep.name=again"]))
    _, (parent,), trials = _runs(store_uri)
    assert parent.info.status == "KILLED"
    assert [(t.info.run_name, t.info.status) for t in trials] == [
        ("trial-0", "FINISHED"),
        ("trial-1", "KILLED"),
    ]

    plan += [("finish", 0.65), ("finish", 0.9)]
    result = run_sweep(compose_config([*overrides, "tuner.max_trials=3", "sweep.name=again"]))
    assert not plan
    _, (resumed,), trials = _runs(store_uri)
    assert resumed.info.run_id == parent.info.run_id and resumed.info.status == "FINISHED"
    statuses = sorted((t.info.run_name, t.info.status) for t in trials)
    # The interrupted trial runs again as a new run; the finished one is not repeated.
    assert statuses == [
        ("trial-0", "FINISHED"),
        ("trial-1", "FINISHED"),
        ("trial-1", "KILLED"),
        ("trial-2", "FINISHED"),
    ]
    assert result.best.trial_id == "2" and len(result.results) == 3


def test_the_time_budget_starts_no_trial_it_cannot_finish_and_counts_across_runs(
    plan, overrides, store_uri
):
    import math

    plan += [("sleep3", 0.7)] * 10
    budgeted = [*overrides, "tuner.max_trials=10", "sweep.name=budget"]
    result = run_sweep(compose_config([*budgeted, "tuner.time_budget=10s"]))
    ran, seconds = len(result.results), [r.seconds for r in result.results]
    assert ran < 10 and result.budget_ended.startswith("the time budget (10s) ended")
    # No trial started without a median trial's time left: the last began before then.
    assert sum(seconds[:-1]) < 10
    _, (parent,), trials = _runs(store_uri)
    assert parent.info.status == "FINISHED" and "ended the search" in parent.data.tags[BUDGET]
    assert all(t.info.status == "FINISHED" for t in trials) and len(trials) == ran

    # Continued with a larger budget, room for two or three more trials: what the first
    # run's trials took counts, so it does not start from zero.
    larger = math.ceil(sum(seconds) + 2.5 * max(seconds))
    again = run_sweep(compose_config([*budgeted, f"tuner.time_budget={larger}s"]))
    added = [r.seconds for r in again.results[ran:]]
    assert added and again.budget_ended
    assert sum(added[:-1]) < larger - sum(seconds)  # only the budget left was used


def test_trials_side_by_side_count_once_against_the_budget():
    from happysad.search.budget import wall_time

    assert wall_time([]) == 0
    assert wall_time([(0, 10), (10, 15)]) == 15  # one after the other
    assert wall_time([(0, 10), (2, 12), (4, 6)]) == 12  # side by side, one inside another
    assert wall_time([(20, 25), (0, 10), (5, 8)]) == 15  # a gap between, in any order


def test_the_trial_running_when_the_budget_ends_stops_with_its_best_epoch():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    x, y = np.random.default_rng(0).random((64, 4)), np.ones((64, 1))
    ended = training.Deadline(time.time())  # already over: stops at the first batch
    history = model.fit(x, y, batch_size=8, epochs=5, callbacks=[ended], verbose=0)
    assert ended.stopped and len(history.epoch) == 1
    later = training.Deadline(time.time() + 3600)
    history = model.fit(x, y, batch_size=8, epochs=3, callbacks=[later], verbose=0)
    assert not later.stopped and len(history.epoch) == 3
