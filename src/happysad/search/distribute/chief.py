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
The sweep's own tracking server (a local store's) asks for a password made for it,
which its workers get in their environment.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from happysad.config.schema import Config, DistributedMode
from happysad.errors import SweepFailed
from happysad.processes import free_port
from happysad.search import kt_internals, tuning
from happysad.search.budget import Budget
from happysad.search.distribute.workers import LocalWorkers, RayWorkers, Workers
from happysad.tracking import names
from happysad.tracking.server import USER
from happysad.tracking.store import (
    PASSWORD_VARIABLE,
    USERNAME_VARIABLE,
    quiet_run_links,
    without_credentials,
)

log = logging.getLogger("happysad")

POLL = 0.5  # seconds between looks at the workers and the oracle


def keep_to_budget(oracle, budget: Budget, previous: list[float]) -> None:
    """The chief's oracle starts no trial when one as long as the median trial so far
    (`previous`, and those ended here) would not fit in the time budget left: it then
    answers every worker that asks for a new trial that the search has ended. A worker
    started again still gets back the trial it held (keras-tuner hands it out before it
    looks at max_trials)."""
    started: dict[str, float] = {}
    measured = list(previous)

    def before_create() -> None:
        ended = budget.end_unless_room(measured)
        if ended:
            oracle.max_trials = max(len(oracle.trials), 1)
            log.info(ended)

    def created(trial) -> None:
        if trial.status == kt_internals.RUNNING:
            started.setdefault(trial.trial_id, time.time())

    def ended(trial) -> None:
        if trial.trial_id in started:
            measured.append(time.time() - started[trial.trial_id])

    kt_internals.intercept(oracle, before_create, created, ended)


def search(
    cfg: Config, sweep, tuner, server=None, budget: Budget | None = None, previous: list = ()
) -> list:
    """Serve `tuner`'s oracle to the workers until the search ends; returns the sweep's
    trials as recorded in MLflow (TrialRecords, oldest first). `server`: the store's
    tracking server (tracking_server), if it has one; `budget`: the sweep's time
    budget, kept by this process's clock; `previous`: the trials recorded before this
    run of the sweep (TrialRecords), whose times the budget judges by too."""
    import tensorflow as tf

    d = cfg.distributed
    folder = Path(cfg.sweep.dir) / cfg.sweep.name / "workers"
    quiet_run_links()
    kt_internals.quiet()
    kt_internals.reload_oracle(tuner)
    tuning.retry_unrecorded(tuner.oracle, previous)
    tuner.oracle.verbose = 0  # the chief says what ended, in its own words (_watch)
    if budget is not None:
        keep_to_budget(tuner.oracle, budget, [r.seconds for r in previous if r.seconds])
        # Read by every worker as it joins: their trials stop at the same time.
        sweep.tag_sweep({names.DEADLINE: repr(budget.deadline)})
    tracking_uri = server.wait_until_up() if server is not None else sweep.store.connect_uri
    tracking = {"MLFLOW_TRACKING_URI": tracking_uri, **(server.client_env if server else {})}
    shown = without_credentials(tracking_uri)
    # Made (a Ray started) before the oracle is served: Ray forks its servers, and a
    # fork beside gRPC's running threads can leave Ray's GCS server hung at its start.
    if d.mode is DistributedMode.ray:
        workers = RayWorkers(cfg, folder, tracking)
    else:
        gpus = len(tf.config.list_physical_devices("GPU"))
        workers = LocalWorkers(cfg, folder, tracking, gpus)
    try:
        with kt_internals.serving_oracle(tuner.oracle, d.host, d.port or free_port(d.host)) as (
            servicer,
            port,
        ):
            command = [
                sys.executable,
                "-m",
                "happysad.worker",
                "--chief",
                f"{d.host}:{port}",
                "--sweep-run",
                sweep.run_id,
                "--connect-timeout",
                str(d.connect_timeout),
            ]
            log.info(
                f"distributed: oracle on {d.host}:{port}, MLflow over {shown}; "
                f"{d.workers} workers of {workers.share} each; their logs: {folder}/; "
                f"more join with: python -m happysad.worker --chief {d.host}:{port} "
                f"--tracking-uri {shown} --sweep-run {sweep.run_id} --id <a new id>"
                + _login_hint(server, tracking_uri, shown)
            )
            workers.start_all(command)
            _watch(tuner.oracle, servicer, workers, sweep, d.worker_timeout, server)
            workers.stop()
    except BaseException:  # Ctrl-C, SIGTERM, every worker gone: nothing left running
        workers.stop()
        sweep.close_interrupted_trials(reason="stopped: the sweep stopped during this trial")
        raise
    return sweep.previous_trials()


def _login_hint(server, tracking_uri: str, shown: str) -> str:
    """What the join line adds about the store's login, without the login itself."""
    if server is not None:
        return (
            f" (the sweep's tracking server asks for a user and password: give "
            f"{USERNAME_VARIABLE}={USER} and {PASSWORD_VARIABLE} from "
            f"{server.login.password_file()}, which only you can read, in the environment)"
        )
    if shown != tracking_uri or USERNAME_VARIABLE in os.environ:
        return (
            f" (the store's credentials in MLFLOW_TRACKING_URI, or {USERNAME_VARIABLE} and "
            f"{PASSWORD_VARIABLE}, never on a command line)"
        )
    return ""


def _watch(oracle, servicer, workers: Workers, sweep, worker_timeout: float, server=None) -> None:
    """Until the search ends: the oracle has said stop and no worker, of this machine or
    another, holds a trial or waits for one. Workers of this machine that died for good
    are not waited for, nor those of other machines not heard from for
    `worker_timeout` seconds (their trials' runs are marked KILLED); when no worker is
    left, it fails. The sweep's own tracking server (`server`), if it ends, is started
    again."""
    busy = kt_internals.locked(lambda o: set(o.tuner_ids) | set(o.ongoing_trials))
    own = {w.tuner_id for w in workers.workers}
    given_up: dict[str, float] = {}  # workers of other machines: when the chief gave up
    since = time.monotonic()
    reported = len(oracle.end_order)
    while True:
        time.sleep(POLL)
        restarted = server.restart_if_ended() if server is not None else None
        if restarted:
            log.warning(restarted)
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
            # keras-tuner's oracle saves itself before it lets go of an ended trial, so
            # its file would hand that trial out again after a restart.
            kt_internals.save_oracle(oracle)
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
