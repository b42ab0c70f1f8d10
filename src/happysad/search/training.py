"""Training one trial: build, fit, score on validation, log the model; by default in
a fresh process.

TensorFlow keeps some native memory of every model it has trained, even after
`keras.backend.clear_session()`: about 9 MiB a trial here, so a long sweep grows
without bound (benchmarks/memory.py). With `sweep.isolate_trials=true` (the
default) each trial trains in its own child process, forked from a server that
imported TensorFlow once and never trained: the trial's memory, host and GPU, is
returned when it ends, and a trial that crashes the interpreter or is killed for
memory fails alone while the sweep goes on. The sweep's process draws the
hyperparameters, records in MLflow and shows progress; the child reports each
epoch back as it ends.

The same `train` runs in the sweep's process with `sweep.isolate_trials=false`
(for a debugger, or where processes cannot be forked).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np

from happysad.config.schema import Config, Pruning
from happysad.data.dataset import CLASS_NAMES, ImageData
from happysad.model.hypermodel import FaceHyperModel, portable, with_test_time_flip
from happysad.processes import die_with_parent, died
from happysad.search import kt_internals
from happysad.search.budget import Budget
from happysad.serving.pyfunc import probabilities
from happysad.tracking.models import log_model
from happysad.tracking.store import Store

# What a trial's child process reports after each epoch: epoch, logs, seconds; the
# answer is true when the trial is to stop there (pruning).
EpochReport = Callable[[int, dict[str, float], float], bool | None]
LOG_TAIL = 40  # lines of a dead trial process's error output kept with its failure


@dataclass
class TrialJob:
    """Everything one trial needs, sent to its process."""

    cfg: Config
    data: ImageData
    hyperparameters: keras_tuner.HyperParameters
    objective: str
    maximize: bool
    checkpoint: str  # keras-tuner's best-epoch weights, for tuner.load_model and Hyperband
    build_config: str
    warm_start: str | None = None  # Hyperband: the checkpoint this trial goes on from
    epochs: int | None = None
    initial_epoch: int = 0
    tracking_uri: str | None = None  # with run_id: log the trained model to this run of this store
    run_id: str | None = None
    model_settings: dict[str, Any] = field(default_factory=dict)
    model_metadata: dict[str, Any] = field(default_factory=dict)
    log_path: str | None = None  # the child's error output
    deadline: float | None = None  # time.time() when the sweep's time budget runs out
    backbones: dict = field(default_factory=dict)  # transfer.Backbone by URI
    trial_id: str = ""


@dataclass
class Jobs:
    """What every trial's job takes from the search, set once; `for_trial` adds what is
    the trial's own. Assembled here, so that the tuner's hooks only say when a trial
    runs and where keras-tuner keeps its files."""

    cfg: Config
    data: ImageData
    objective: str
    maximize: bool
    backbones: dict = field(default_factory=dict)  # transfer.Backbone by URI
    budget: Budget | None = None  # the sweep's time budget: trials stop at its deadline
    tracking_uri: str | None = None  # the store the trials' models are logged to

    def for_trial(
        self,
        trial_id: str,
        hyperparameters: keras_tuner.HyperParameters,
        *,
        checkpoint: str,
        build_config: str,
        warm_start: str | None,
        folder: Path,
        run_id: str | None,
    ) -> TrialJob:
        cfg, values = self.cfg, hyperparameters.values
        job = TrialJob(
            cfg=cfg,
            data=self.data,
            hyperparameters=hyperparameters,
            objective=self.objective,
            maximize=self.maximize,
            checkpoint=checkpoint,
            build_config=build_config,
            warm_start=warm_start,
            # Hyperband's rounds set a trial's epochs and where it goes on from.
            epochs=values.get("tuner/epochs", cfg.tuner.epochs),
            initial_epoch=values.get("tuner/initial_epoch", 0),
            log_path=str(folder / "process.log") if cfg.sweep.isolate_trials else None,
            deadline=self.budget.deadline if self.budget else None,
            backbones=self.backbones,
            trial_id=trial_id,
        )
        if cfg.mlflow.log_models and self.tracking_uri and run_id:
            job.tracking_uri, job.run_id = self.tracking_uri, run_id
            job.model_settings = {
                "preprocessing": self.data.preprocessing.to_dict(),
                "class_names": list(CLASS_NAMES),
                "max_pixels": cfg.data.max_pixels,
                "min_face": cfg.data.min_face,
            }
            job.model_metadata = model_metadata(cfg, self.data, trial_id)
        return job


def model_metadata(cfg: Config, data: ImageData, trial_id: str) -> dict[str, Any]:
    """What a user of the model needs to feed it images as it was trained."""
    return {
        "preprocessing": data.preprocessing.to_dict(),
        "class_names": list(CLASS_NAMES),
        "positive_class": CLASS_NAMES[1],
        "input": "uint8 pixels 0-255, shape (n, size, size, channels); the model rescales them",
        "data_digest": data.digest,
        "sweep": cfg.sweep.name,
        "trial_id": trial_id,
    }


@dataclass
class TrialOutcome:
    history: dict[str, list[float]]
    epochs: list[int]
    probabilities: np.ndarray  # P(happy) per validation image, from the best epoch's weights
    model_uri: str | None = None
    record_error: str | None = None  # logging the model failed: why
    record_details: str | None = None
    peak_rss_mib: float | None = None  # of the trial's process, when it had its own
    stopped_by_budget: bool = False  # the time budget ended its training

    def keras_history(self) -> keras.callbacks.History:
        """The form keras-tuner scores a trial from."""
        history = keras.callbacks.History()
        history.history, history.epoch = self.history, self.epochs
        return history


class TrialProcessFailed(kt_internals.FailedTrialError):
    """The trial failed in its process; `details` has its traceback or error output."""

    def __init__(self, reason: str, details: str | None = None):
        super().__init__(reason)
        self.details = details


class Deadline(keras.callbacks.Callback):
    """Stop training when the sweep's time budget runs out: after the last whole epoch
    that fits (judged by the longest epoch so far), or at the limit mid-epoch. Early
    stopping then puts back the best epoch's weights, as after any other stop."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline
        self.stopped = False
        self._longest = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if time.time() >= self.deadline:
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        self._longest = max(self._longest, now - self._started)
        if now + self._longest > self.deadline:
            self._stop()

    def _stop(self) -> None:
        self.stopped = True
        self.model.stop_training = True


class _Reporter(keras.callbacks.Callback):
    def __init__(self, report: EpochReport):
        super().__init__()
        self._report = report

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        metrics = {name: float(v) for name, v in (logs or {}).items()}
        if self._report(epoch, metrics, time.monotonic() - self._started):
            self.model.stop_training = True  # pruned: early stopping puts back its best epoch


def train(job: TrialJob, report: EpochReport, fresh_process: bool = False) -> TrialOutcome:
    """Train one trial in this process; a FailedTrialError fails it with the reason."""
    if not fresh_process:  # a fresh process has nothing to clear
        keras.backend.clear_session()
        gc.collect()
    hypermodel = FaceHyperModel(
        job.cfg, job.data.input_shape, len(job.data.train), backbones=job.backbones
    )
    hp = job.hyperparameters
    model = hypermodel.build(hp)
    if job.warm_start:
        model.load_weights(job.warm_start)
    kt_internals.save_json(job.build_config, model.get_build_config())
    objective = keras_tuner.Objective(job.objective, "max" if job.maximize else "min")
    callbacks = [_Reporter(report), kt_internals.SaveBestEpoch(objective, job.checkpoint)]
    deadline = Deadline(job.deadline) if job.deadline is not None else None
    if deadline is not None:
        callbacks.append(deadline)
    fit = hypermodel.fit(
        hp,
        model,
        job.data,
        callbacks=callbacks,
        epochs=job.epochs,
        initial_epoch=job.initial_epoch,
    )
    if job.cfg.model.test_time_flip:  # after training: it changes predictions only
        model = with_test_time_flip(model)
    outcome = TrialOutcome(
        history={name: [float(v) for v in values] for name, values in fit.history.items()},
        epochs=list(fit.epoch),
        probabilities=probabilities(model, job.data.val.x),
        stopped_by_budget=deadline is not None and deadline.stopped,
    )
    if job.run_id is not None:
        try:
            portable(model)  # plain Keras classes only, so it loads anywhere
            outcome.model_uri = log_model(
                Store(job.tracking_uri), job.run_id, model, job.model_settings, job.model_metadata
            )
        except Exception as err:  # noqa: BLE001 - the sweep records it on the trial's run
            outcome.record_error = f"logging the model failed: {type(err).__name__}: {err}"
            outcome.record_details = traceback.format_exc()
    return outcome


def run(job: TrialJob, report: EpochReport, isolate: bool) -> TrialOutcome:
    """Train one trial, in a fresh process when `isolate`; raises TrialProcessFailed."""
    if not isolate:
        return train(job, report)
    context = _context()
    receive, send = context.Pipe()  # duplex: each epoch is answered, go on or stop
    process = context.Process(target=_child, args=(job, send), name="happysad-trial", daemon=True)
    try:
        process.start()
    except OSError as err:  # it died as it started, before it had read its job
        raise TrialProcessFailed(
            f"the trial's process ended as it started ({type(err).__name__}: {err}). If every "
            'trial of a script ends so, run the sweep under `if __name__ == "__main__":` '
            "(Python's rule for programs that start processes)"
        ) from err
    finally:
        send.close()
    outcome = failure = None
    try:
        while True:
            try:
                message = receive.recv()
            except EOFError:  # the process ended: its last message came before
                break
            if message[0] == "epoch":
                stop = bool(report(*message[1:]))
                if _waits_for_verdicts(job):
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        receive.send(stop)
            elif message[0] == "done":
                outcome = message[1]
            else:
                failure = TrialProcessFailed(message[1], message[2])
        process.join()
    except BaseException:  # Ctrl-C, SIGTERM: the trial stops with the sweep
        process.kill()
        process.join()
        raise
    finally:
        receive.close()
    if failure is not None:
        raise failure
    if outcome is None:
        what = f"trial-{job.trial_id}'s process" if job.trial_id else "the trial's process"
        raise TrialProcessFailed(died(what, process.exitcode, job.log_path), _tail(job.log_path))
    return outcome


def start() -> None:
    """Start the server trial processes are forked from: it imports TensorFlow once,
    while the sweep opens its store and builds its tuner."""
    if _FORKSERVER:
        from multiprocessing import forkserver

        _context()
        forkserver.ensure_running()


_FORKSERVER = "forkserver" in multiprocessing.get_all_start_methods()


def _context():
    if not _FORKSERVER:  # Windows: every trial imports TensorFlow again (seconds)
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # What a trial needs, imported once in the server; children start from there.
    context.set_forkserver_preload(["happysad.search.trial_server"])
    return context


def _child(job: TrialJob, conn) -> None:
    """The trial's process: train, report, exit. The sweep's process owns the runs'
    status; this process only adds the model to the trial's run."""
    # What the fork server imported is shared with it until written to: keep the
    # garbage collector from touching (and so copying) all of it.
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the sweep, which stops us
    die_with_parent(signal.SIGKILL)  # the fork server, which ends with the sweep
    if job.log_path:
        # TensorFlow's per-process start-up lines and warnings go to the trial's log,
        # recorded on its run, instead of repeating on the console every trial.
        Path(job.log_path).parent.mkdir(parents=True, exist_ok=True)
        log = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 2)
        os.close(log)
        sys.stderr = os.fdopen(2, "w", buffering=1)
    if job.cfg.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    waits = _waits_for_verdicts(job)

    def report(epoch: int, metrics: dict[str, float], seconds: float) -> bool:
        try:
            conn.send(("epoch", epoch, metrics, seconds))
            # With pruning, the sweep's answer: stop here (pruned) or go on.
            return conn.recv() if waits else False
        except (BrokenPipeError, ConnectionResetError, EOFError):
            os._exit(1)  # the sweep is gone: nobody to train for

    try:
        outcome = train(job, report, fresh_process=True)
        outcome.peak_rss_mib = _peak_rss_mib()
        conn.send(("done", outcome))
    except BaseException as err:  # noqa: BLE001 - reported to the sweep, which records it
        if isinstance(err, kt_internals.FailedTrialError):
            reason = str(err)
        else:
            reason = f"{type(err).__name__}: {err}"
        conn.send(("failed", reason, traceback.format_exc()))
    finally:
        conn.close()


def _waits_for_verdicts(job: TrialJob) -> bool:
    """Whether the trial's process waits after each epoch for the sweep's verdict: only
    with pruning, so that without it training never waits for the sweep's recording."""
    return job.cfg.tuner.pruning is not Pruning.none


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tail(path: str | None) -> str | None:
    if not path or not os.path.exists(path):
        return None
    lines = Path(path).read_text(errors="replace").splitlines()[-LOG_TAIL:]
    return "\n".join(lines) or None
