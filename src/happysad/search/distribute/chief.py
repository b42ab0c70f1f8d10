"""A sweep over several workers: keras-tuner's distributed mode, run for the user.

The sweep's process is the chief. It owns the sweep's MLflow run and keras-tuner's
oracle, which it serves over gRPC (keras-tuner's own servicer), and it never trains.
Workers (`python -m happysad.worker`, started here for `distributed=local`, or by a
scheduler) ask the oracle for trials, train them and record each as a nested run of
the sweep, tagged with their keras-tuner id. The chief watches its workers, which
keras-tuner does not: one that dies is started again under the same id, so the
oracle hands it the trial it held, and its interrupted run is marked KILLED; when
they are all gone for good it says so instead of waiting for ever.

keras-tuner's gRPC oracle has no authentication: it listens on `distributed.host`,
loopback unless told otherwise, and must only ever be reachable on a private network.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from happysad.config.schema import HEARTBEAT, Config, DistributedMode
from happysad.errors import SweepFailed
from happysad.search.budget import Budget
from happysad.search.startup import with_parent
from happysad.tracking.server import free_port

log = logging.getLogger("happysad")

POLL = 0.5  # seconds between looks at the workers and the oracle
CORES_VARIABLE = "HAPPYSAD_CPU_CORES"  # the cores a worker keeps to (its affinity)


@contextmanager
def serving_oracle(oracle, host: str, port: int) -> Iterator[tuple[object, int]]:
    """keras-tuner's OracleServicer on host:port (a free one for 0) for the length of
    the block; yields the servicer and the port."""
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    class Servicer(OracleServicer):
        """keras-tuner's servicer, noting when it last heard from each worker
        (`heard`, time.monotonic() by keras-tuner id)."""

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

    port = port or free_port(host)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = Servicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(grace=None)


@contextmanager
def heartbeat(oracle, trial_id: str) -> Iterator[None]:
    """A worker's sign of life to the chief while it trains `trial_id`, every HEARTBEAT
    seconds (keras-tuner's client says nothing between a trial's start and end): the
    chief gives up on a worker it did not start only when it stops. A heartbeat that
    fails is not an error here: the worker's next call to the chief says what is wrong."""
    import threading

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


def quiet_keras_tuner() -> None:
    """keras-tuner 1.4.8 prints the value of a conditional hyperparameter's parent every
    time a trial passes over gRPC (a debug print left in `conditions.Parent.to_proto`):
    a bare number on the console. Its output is dropped; loggers are not affected (they
    keep their own stream). MLflow's 'View run' links, printed on every run over HTTP,
    go too: the sweep's summary says where its runs are."""
    import contextlib
    import io

    from keras_tuner.src.engine import conditions

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    original = conditions.Parent.to_proto
    if getattr(original, "happysad_quiet", False):
        return

    def to_proto(self):
        with contextlib.redirect_stdout(io.StringIO()):
            return original(self)

    to_proto.happysad_quiet = True
    conditions.Parent.to_proto = to_proto


def reload_oracle(tuner) -> None:
    """A continued sweep's oracle, from its own file. keras-tuner reloads it only with the
    tuner's own file (tuner0.json), which here is a worker's, and missing when that
    worker never finished a trial: the chief would start the search afresh."""
    saved = Path(tuner.project_dir) / "oracle.json"
    if saved.is_file() and not tuner.oracle.trials:
        tuner.oracle.reload()


def save_oracle(oracle) -> None:
    """keras-tuner's oracle saves itself before it lets go of an ended trial, so its file
    would hand that trial out again after a restart; saved again once it has."""
    from keras_tuner.src.engine.oracle import synchronized

    synchronized(lambda o: o.save())(oracle)


@dataclass
class Worker:
    tuner_id: str
    env: dict[str, str]
    log_path: Path
    handle: Any = None  # its process, or its Ray actor's task
    restarts: int = 0
    done: bool = False
    gone: bool = False  # died more often than it may be started again
    exit_codes: list[int] = field(default_factory=list)


def worker_env(per_cpu: int) -> dict[str, str]:
    """What a worker's process is given beside its command line: its thread counts, and
    MLflow's client retrying for seconds rather than its default four minutes (a remote
    server may rate-limit; the chief's own does not, and once it is gone, the chief
    stopped, its workers give up in seconds). A user's own settings win."""
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        **{k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "HAPPYSAD_"))},
        "TF_NUM_INTRAOP_THREADS": str(per_cpu),
        "TF_NUM_INTEROP_THREADS": str(min(2, per_cpu)),
        "OMP_NUM_THREADS": str(per_cpu),
    }


class Workers:
    """The workers the chief starts and watches; how they run is a subclass's."""

    def __init__(self, cfg: Config, command: list[str], folder: Path):
        self.command = command
        self.max_restarts = cfg.distributed.restarts
        self.workers: list[Worker] = []
        self.share = ""

    def start(self, worker: Worker) -> None:
        raise NotImplementedError

    def exit_code(self, worker: Worker) -> int | None:
        """None while it runs; a negative code: killed by that signal."""
        raise NotImplementedError

    def ended(self, worker: Worker) -> None:
        """Stop what a worker that ended left behind."""

    def stop(self) -> None:
        raise NotImplementedError

    def start_all(self) -> None:
        for worker in self.workers:
            self.start(worker)

    def check(self, sweep) -> list[str]:
        """Look at every worker once: a finished one is done; one that died has what it
        left stopped and its RUNNING trial run marked KILLED, and is started again while
        it may be. Returns what happened, for the console."""
        events = []
        for w in self.workers:
            if w.done or w.gone or w.handle is None:
                continue
            code = self.exit_code(w)
            if code is None:
                continue
            w.exit_codes.append(code)
            self.ended(w)
            if code == 0:
                w.done = True
                continue
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            killed = sweep.close_interrupted_trials(
                worker=w.tuner_id,
                reason=f"interrupted: its worker {w.tuner_id} {how} during this trial",
            )
            lost = f" during trial-{', trial-'.join(killed)} (run marked KILLED)" if killed else ""
            if w.restarts < self.max_restarts:
                w.restarts += 1
                self.start(w)
                events.append(
                    f"worker {w.tuner_id} {how}{lost}; started again "
                    f"({w.restarts} of {self.max_restarts}), see {w.log_path}"
                )
            else:
                w.gone = True
                events.append(
                    f"worker {w.tuner_id} {how}{lost}, and has been started again "
                    f"{self.max_restarts} times: the sweep goes on without it, see {w.log_path}"
                )
        return events

    @property
    def running(self) -> list[Worker]:
        return [w for w in self.workers if not (w.done or w.gone)]


class LocalWorkers(Workers):
    """`distributed.workers` worker processes on this machine, each in its own process
    group with its share of the CPU cores (affinity and TensorFlow's thread counts)
    and of the GPUs."""

    def __init__(self, cfg: Config, command: list[str], folder: Path, gpus: int):
        super().__init__(cfg, command, folder)
        d = cfg.distributed
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        n = max(d.workers, 1)
        per_cpu = d.cpus_per_worker or max(1, len(cores) // n)
        per_gpu = d.gpus_per_worker if d.gpus_per_worker is not None else gpus // n
        for k in range(d.workers):
            mine = [cores[(k * per_cpu + i) % len(cores)] for i in range(per_cpu)] if cores else []
            env = {
                **os.environ,
                **worker_env(per_cpu),
                "CUDA_VISIBLE_DEVICES": ",".join(str(k * per_gpu + i) for i in range(per_gpu)),
                CORES_VARIABLE: ",".join(map(str, mine)),
            }
            self.workers.append(Worker(f"tuner{k}", env, folder / f"tuner{k}.log"))
        self.share = _share(per_cpu, per_gpu)

    def start(self, worker: Worker) -> None:
        worker.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(worker.log_path, "a") as out:
            # A chief killed hard stops its workers too (with_parent); a worker's own
            # process group takes its trial's processes with it (stop_group).
            worker.handle = subprocess.Popen(
                with_parent([*self.command, "--id", worker.tuner_id]),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=worker.env,
                start_new_session=True,
            )

    def exit_code(self, worker: Worker) -> int | None:
        return worker.handle.poll()

    def ended(self, worker: Worker) -> None:
        from happysad.tracking.server import stop_group

        stop_group(worker.handle, grace=2)  # what it left running (its trial's process)

    def stop(self) -> None:
        from happysad.tracking.server import stop_group

        for w in self.workers:
            if w.handle is not None and w.handle.poll() is None:
                stop_group(w.handle, grace=30)


def _share(per_cpu: int, per_gpu: int) -> str:
    return f"{per_cpu} CPU core{'s' if per_cpu > 1 else ''}" + (
        f" and {per_gpu} GPU{'s' if per_gpu > 1 else ''}" if per_gpu else ""
    )


class WorkerActor:
    """A Ray actor that holds one worker: the resources it reserved are the worker's,
    and the worker's process ends with it (with_parent)."""

    def ping(self) -> bool:
        return True

    def run(self, command: list[str], env: dict[str, str], log_path: str, cwd: str) -> int:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as out:
            process = subprocess.Popen(
                with_parent(command),
                stdout=out,
                stderr=subprocess.STDOUT,
                # Ray gives the actor its GPUs in CUDA_VISIBLE_DEVICES: the worker inherits it.
                env={**os.environ, **env},
                cwd=cwd if Path(cwd).is_dir() else None,
                start_new_session=True,
            )
            return process.wait()


def _wait_until_alive(actor, limit: float = 120) -> None:
    """Until a restarting actor answers: a call made while Ray restarts it fails at once
    (actor calls are not retried), and the worker would be lost. After `limit` seconds
    the worker's own start fails, and says so."""
    import ray

    deadline = time.monotonic() + limit
    while True:
        try:
            ray.get(actor.ping.remote(), timeout=10)
            return
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)


class RayWorkers(Workers):
    """`distributed.workers` Ray actors, each reserving the CPUs and GPUs its worker
    trains with, on the cluster at `distributed.address` (`auto`, `ray://...`), or on a
    Ray started here and stopped with the sweep. An actor that dies is restarted by Ray
    and its worker started again under the same id."""

    def __init__(self, cfg: Config, command: list[str], folder: Path):
        import ray

        super().__init__(cfg, command, folder)
        d = cfg.distributed
        self._own_ray = not ray.is_initialized()
        if self._own_ray:
            ray.init(
                address=d.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                **({} if d.address else {"object_store_memory": 100 * 2**20}),
            )
        resources = ray.cluster_resources()
        n = max(d.workers, 1)
        per_cpu = d.cpus_per_worker or max(1, int(resources.get("CPU", 1)) // n)
        gpus = int(resources.get("GPU", 0))
        per_gpu = d.gpus_per_worker if d.gpus_per_worker is not None else gpus // n
        actor = ray.remote(WorkerActor).options(
            num_cpus=per_cpu, num_gpus=per_gpu, max_restarts=d.restarts
        )
        self.actors = {}
        for k in range(d.workers):
            tuner_id = f"tuner{k}"
            self.actors[tuner_id] = actor.remote()
            self.workers.append(Worker(tuner_id, worker_env(per_cpu), folder / f"{tuner_id}.log"))
        self.share = _share(per_cpu, per_gpu) + " (Ray actors)"

    def start(self, worker: Worker) -> None:
        actor = self.actors[worker.tuner_id]
        if worker.exit_codes:  # started again: its actor may still be restarting
            _wait_until_alive(actor)
        worker.handle = actor.run.remote(
            [*self.command, "--id", worker.tuner_id],
            worker.env,
            str(worker.log_path.resolve()),
            os.getcwd(),
        )

    def exit_code(self, worker: Worker) -> int | None:
        import ray

        ready, _ = ray.wait([worker.handle], timeout=0)
        if not ready:
            return None
        try:
            return ray.get(worker.handle)
        except ray.exceptions.RayActorError:
            return -signal.SIGKILL  # its actor died, and its worker with it
        except ray.exceptions.RayError:
            return 1

    def stop(self) -> None:
        import ray

        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)  # its worker gets SIGTERM (with_parent)
        if self._own_ray:
            ray.shutdown()


@contextmanager
def tracking_server(cfg: Config, uri: str) -> Iterator[object | None]:
    """For a distributed sweep over a local SQLite store, `mlflow server` over it, started
    now and stopped with the block (tracking.server.Server): many writers need a
    server, and it stays the file promote, compare and ui read. None otherwise: a
    local sweep writes the file itself, and an http(s) store is used as it is."""
    from happysad.tracking.server import started
    from happysad.tracking.store import sqlite_path

    if not cfg.distributed.enabled or not sqlite_path(uri):
        yield None
        return
    with started(uri) as server:
        yield server


def keep_to_budget(oracle, budget: Budget, previous: list[float]) -> None:
    """The chief's oracle starts no trial when one as long as the median trial so far
    (`previous`, and those ended here) would not fit in the time budget left: it then
    answers every worker that asks for a new trial that the search has ended. A worker
    started again still gets back the trial it held (keras-tuner hands it out before it
    looks at max_trials)."""
    from keras_tuner.src.engine import trial as trial_module

    create, end = oracle.create_trial, oracle.end_trial
    started: dict[str, float] = {}
    measured = list(previous)

    def create_trial(tuner_id):
        ended = budget.end_unless_room(measured)
        if ended:
            oracle.max_trials = max(len(oracle.trials), 1)
            log.info(ended)
        trial = create(tuner_id)
        if trial.status == trial_module.TrialStatus.RUNNING:
            started.setdefault(trial.trial_id, time.time())
        return trial

    def end_trial(trial):
        if trial.trial_id in started:
            measured.append(time.time() - started[trial.trial_id])
        return end(trial)

    # keras-tuner's servicer calls these on the oracle it was given: wrapped in place.
    oracle.create_trial, oracle.end_trial = create_trial, end_trial


def search(
    cfg: Config, sweep, tuner, server=None, budget: Budget | None = None, previous: list = ()
) -> list:
    """Serve `tuner`'s oracle to the workers until the search ends; returns the sweep's
    trials as recorded in MLflow (TrialRecords, oldest first). `server`: the store's
    tracking server (tracking_server), if it has one; `budget`: the sweep's time
    budget, kept by this process's clock; `previous`: the trials recorded before this
    run of the sweep (TrialRecords), whose times the budget judges by too."""
    import tensorflow as tf

    from happysad.tracking import names

    d = cfg.distributed
    folder = Path(cfg.sweep.dir) / cfg.sweep.name / "workers"
    quiet_keras_tuner()
    reload_oracle(tuner)
    tuner.oracle.verbose = 0  # the chief says what ended, in its own words (_watch)
    if budget is not None:
        keep_to_budget(tuner.oracle, budget, [r.seconds for r in previous if r.seconds])
        # Read by every worker as it joins: their trials stop at the same time.
        sweep.tag_sweep({names.DEADLINE: repr(budget.deadline)})
    tracking_uri = server.wait_until_up() if server is not None else sweep.store.uri
    with serving_oracle(tuner.oracle, d.host, d.port) as (servicer, port):
        command = [
            sys.executable,
            "-m",
            "happysad.worker",
            "--chief",
            f"{d.host}:{port}",
            "--tracking-uri",
            tracking_uri,
            "--sweep-run",
            sweep.run_id,
            "--connect-timeout",
            str(d.connect_timeout),
        ]
        if d.mode is DistributedMode.ray:
            workers = RayWorkers(cfg, command, folder)
        else:
            gpus = len(tf.config.list_physical_devices("GPU"))
            workers = LocalWorkers(cfg, command, folder, gpus)
        log.info(
            f"distributed: oracle on {d.host}:{port}, MLflow over {tracking_uri}; "
            f"{d.workers} workers of {workers.share} each; their logs: {folder}/; "
            f"more join with: python -m happysad.worker --chief {d.host}:{port} "
            f"--tracking-uri {tracking_uri} --sweep-run {sweep.run_id} --id <a new id>"
        )
        try:
            workers.start_all()
            _watch(tuner.oracle, servicer, workers, sweep, d.worker_timeout)
        except BaseException:  # Ctrl-C, SIGTERM, every worker gone: nothing left running
            workers.stop()
            sweep.close_interrupted_trials(reason="stopped: the sweep stopped during this trial")
            raise
        workers.stop()
    return sweep.previous_trials()


def _watch(oracle, servicer, workers: Workers, sweep, worker_timeout: float) -> None:
    """Until the search ends: the oracle has said stop and no worker, of this machine or
    another, holds a trial or waits for one. Workers of this machine that died for good
    are not waited for, nor those of other machines not heard from for
    `worker_timeout` seconds (their trials' runs are marked KILLED); when no worker is
    left, it fails."""
    from keras_tuner.src.engine.oracle import synchronized

    busy = synchronized(lambda o: set(o.tuner_ids) | set(o.ongoing_trials))
    own = {w.tuner_id for w in workers.workers}
    given_up: dict[str, float] = {}  # workers of other machines: when the chief gave up
    since = time.monotonic()
    reported = len(oracle.end_order)
    while True:
        time.sleep(POLL)
        for event in workers.check(sweep):
            log.warning(event)
        for event in _silent_workers(
            busy(oracle) - own, servicer.heard, given_up, since, worker_timeout, sweep
        ):
            log.warning(event)
        for trial_id in oracle.end_order[reported:]:
            trial = oracle.trials[trial_id]
            score = "" if trial.score is None else f", {oracle.objective.name} {trial.score:.4f}"
            log.info(f"trial-{trial_id} ended: {trial.status.lower()}{score}")
        if len(oracle.end_order) > reported:
            save_oracle(oracle)
        reported = len(oracle.end_order)
        gone = {w.tuner_id for w in workers.workers if w.gone} | set(given_up)
        waiting_on = busy(oracle) - gone
        if servicer.stop_triggered and not waiting_on:
            lost = [t.trial_id for i, t in oracle.ongoing_trials.items() if i in gone]
            if lost:  # held by workers that died for good
                log.warning(f"the search ended without trial-{', trial-'.join(lost)}")
            return
        nobody_left = not workers.running and not any(w.done for w in workers.workers)
        if nobody_left and (workers.workers or given_up) and not waiting_on:
            break  # every worker died, of this machine and of others, and none is working
    if not workers.workers:
        raise SweepFailed(
            f"every worker of the sweep ({', '.join(sorted(given_up))}) went silent for "
            f"distributed.worker_timeout={worker_timeout:.0f} s before the search ended. Run the "
            "same command again to continue the sweep, and start its workers again"
        )
    codes = ", ".join(f"{w.tuner_id}: {w.exit_codes}" for w in workers.workers)
    raise SweepFailed(
        f"all {len(workers.workers)} workers died before the search ended (exit codes {codes}); "
        f"their logs are in {workers.workers[0].log_path.parent}. Run the same command again "
        "to continue the sweep"
    )


def _silent_workers(
    others: set[str],
    heard: dict[str, float],
    given_up: dict[str, float],
    since: float,
    limit: float,
    sweep,
) -> list[str]:
    """Workers of other machines (`others`, which hold a trial or wait for one) not heard
    from for `limit` seconds are given up on, and their trials' runs marked KILLED; one
    heard from again is back. Returns what happened, for the console."""
    now, events = time.monotonic(), []
    for tuner_id in list(given_up):
        if heard.get(tuner_id, since) > given_up[tuner_id]:
            del given_up[tuner_id]
            events.append(f"worker {tuner_id} is back")
    for tuner_id in sorted(others - set(given_up)):
        if now - heard.get(tuner_id, since) <= limit:
            continue
        given_up[tuner_id] = now
        killed = sweep.close_interrupted_trials(
            worker=tuner_id,
            reason=f"lost: its worker {tuner_id} was not heard from for {limit:.0f} s",
        )
        lost = f" during trial-{', trial-'.join(killed)} (run marked KILLED)" if killed else ""
        events.append(
            f"worker {tuner_id} has not been heard from for {limit:.0f} s{lost}: the sweep goes "
            "on without it (started again under the same id, it gets its trial back)"
        )
    return events
