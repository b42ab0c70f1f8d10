"""keras-tuner's internals, behind one wall.

This is the only module that imports `keras_tuner.src` or touches keras-tuner's
private methods and globals (tests/unit/test_layout.py checks it). Everything here is
what keras-tuner 1.4.8, the pinned version, does not offer publicly: where its files
are, its distributed mode's gRPC server and client, its oracle's lock, and two
behaviours it has no switch for (tracebacks printed for every failed trial, a debug
print left in its gRPC code). An upgrade of keras-tuner is checked here first.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import keras_tuner
from keras_tuner.src import config as kt_config
from keras_tuner.src import protos
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.distribute import oracle_client
from keras_tuner.src.distribute import utils as dist_utils
from keras_tuner.src.distribute.oracle_chief import OracleServicer
from keras_tuner.src.engine import conditions, tuner_utils
from keras_tuner.src.engine.oracle import synchronized
from keras_tuner.src.engine.trial import TrialStatus

COMPLETED, RUNNING = TrialStatus.COMPLETED, TrialStatus.RUNNING
# The callback keras-tuner's own run_trial uses: the best epoch's weights, as a file.
SaveBestEpoch = tuner_utils.SaveBestEpoch
FailedTrialError = keras_tuner.errors.FailedTrialError


def quiet() -> None:
    """keras-tuner prints every failed trial's traceback (happysad records it on the
    trial's run instead), and 1.4.8 prints the value of a conditional hyperparameter's
    parent every time a trial passes over gRPC (a debug print left in
    `conditions.Parent.to_proto`): a bare number on the console. Both silenced; loggers
    are not affected."""
    kt_config.DEBUG = False
    original = conditions.Parent.to_proto
    if getattr(original, "happysad_quiet", False):
        return

    def to_proto(self):
        with contextlib.redirect_stdout(io.StringIO()):
            return original(self)

    to_proto.happysad_quiet = True
    conditions.Parent.to_proto = to_proto


def is_worker() -> bool:
    """Whether this process is a worker of a distributed search (its oracle is the
    chief's, over gRPC: KERASTUNER_ORACLE_IP and _PORT are set)."""
    return dist_utils.has_chief_oracle()


def client_timeout(seconds: float) -> None:
    """How long a worker's oracle client waits for a chief that does not answer
    (keras-tuner's own: an hour)."""
    oracle_client.TIMEOUT = seconds


def checkpoint_path(tuner: Any, trial_id: str) -> str:
    """Where keras-tuner keeps a trial's best-epoch weights (tuner.load_model, and
    Hyperband's next round, read them)."""
    return str(Path(tuner._get_checkpoint_fname(trial_id)).resolve())


def build_config_path(tuner: Any, trial_id: str) -> str:
    """Where keras-tuner keeps the build config of a trial's model."""
    return str(Path(tuner._get_build_config_fname(trial_id)).resolve())


def save_json(path: str, value: Any) -> None:
    kt_utils.save_json(path, value)


def hyperband_trials(oracle: Any) -> int:
    """How many trials one Hyperband iteration runs, over all its brackets and rounds."""
    return sum(
        oracle._get_size(bracket, round_num)
        for bracket in range(oracle._get_num_brackets())
        for round_num in range(oracle._get_num_rounds(bracket))
    )


def locked(function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`function(oracle)`, run under the oracle's own lock (the gRPC server's threads
    change the oracle while the chief reads it)."""
    return synchronized(function)


def save_oracle(oracle: Any) -> None:
    """The oracle's file written again, under its lock."""
    locked(lambda o: o.save())(oracle)


def retry_unrecorded(oracle: Any, recorded: set[str]) -> list[str]:
    """The trials the oracle counts as completed that the sweep never recorded (it was
    stopped after the oracle's end of a trial, before that trial's run was ended; the
    run is KILLED): handed out again first, as keras-tuner does with the trials that
    were running when it stopped. `recorded`: the ids of the trials with a FINISHED or
    FAILED run. Returns the ids handed back."""
    again = [
        trial_id
        for trial_id, trial in oracle.trials.items()
        if trial.status == COMPLETED
        and trial_id not in recorded
        and trial_id not in oracle._retry_queue
    ]
    oracle._retry_queue.extend(again)
    return again


def reload_oracle(tuner: Any) -> None:
    """A continued sweep's oracle, from its own file. keras-tuner reloads it only with the
    tuner's own file (tuner0.json), which on a distributed sweep's chief is a worker's,
    and missing when that worker never finished a trial: the search would start afresh."""
    saved = Path(tuner.project_dir) / "oracle.json"
    if saved.is_file() and not tuner.oracle.trials:
        tuner.oracle.reload()


def intercept(
    oracle: Any,
    before_create: Callable[[], None],
    created: Callable[[Any], None],
    ended: Callable[[Any], None],
) -> None:
    """Calls around the oracle's creation and end of trials, as keras-tuner's gRPC
    servicer makes them on the oracle it was given (so: in place, on the instance).
    `before_create()` may lower the oracle's max_trials; `created(trial)`, `ended(trial)`."""
    create, end = oracle.create_trial, oracle.end_trial

    def create_trial(tuner_id):
        before_create()
        trial = create(tuner_id)
        created(trial)
        return trial

    def end_trial(trial):
        ended(trial)
        return end(trial)

    oracle.create_trial, oracle.end_trial = create_trial, end_trial


class _Servicer(OracleServicer):
    """keras-tuner's servicer, noting when it last heard from each worker (`heard`,
    time.monotonic() by keras-tuner id)."""

    def __init__(self, oracle):
        super().__init__(oracle)
        self.heard: dict[str, float] = {}

    def _from_trial(self, trial_id: str) -> None:
        for tuner_id, trial in list(self.oracle.ongoing_trials.items()):
            if trial.trial_id == trial_id:
                self.heard[tuner_id] = time.monotonic()

    def CreateTrial(self, request, context):  # noqa: N802 - gRPC's names
        self.heard[request.tuner_id] = time.monotonic()
        return super().CreateTrial(request, context)

    def GetTrial(self, request, context):  # noqa: N802 - a worker's heartbeat
        self._from_trial(request.trial_id)
        return super().GetTrial(request, context)

    def UpdateTrial(self, request, context):  # noqa: N802
        self._from_trial(request.trial_id)
        return super().UpdateTrial(request, context)

    def EndTrial(self, request, context):  # noqa: N802
        self._from_trial(request.trial.trial_id)
        return super().EndTrial(request, context)


@contextlib.contextmanager
def serving_oracle(oracle: Any, host: str, port: int) -> Iterator[tuple[Any, int]]:
    """keras-tuner's OracleServicer on host:port for the length of the block (not its
    `start_server`, which never returns and waits for ever for dead workers); yields the
    servicer (its `heard`: when each worker was last heard from, and `stop_triggered`)
    and the port."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = _Servicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(grace=None)
