"""A worker's side of a distributed sweep: join the sweep the chief runs, and train and
record the trials its oracle hands out, until the search ends.

The worker reads the sweep's config from the sweep's MLflow run (what the chief
recorded, so every worker trains the same way), builds the same search session as the
chief (its data checked against the sweep's digest), and records each trial as a
nested run of the sweep, tagged `happysad.worker=<its keras-tuner id>`. It gives up,
saying which address it could not reach, when the chief or the tracking server does not
answer within its connect timeout (keras-tuner's own client would wait an hour).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from happysad.config.composition import recorded_config
from happysad.config.duration import parse
from happysad.data import dataset
from happysad.errors import ConfigError, DataError, Unreachable
from happysad.search import startup
from happysad.search.budget import Budget
from happysad.tracking import names
from happysad.tracking.runs import SweepRun
from happysad.tracking.store import (
    PASSWORD_VARIABLE,
    USERNAME_VARIABLE,
    Store,
    quiet_run_links,
)

log = logging.getLogger("happysad")


def reach_chief(address: str, timeout: float) -> None:
    import grpc

    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise Unreachable(
            f"cannot reach the sweep's chief (its keras-tuner oracle) at {address} within "
            f"{timeout:.0f} s: is the sweep running, and is --chief its host:port?"
        ) from None
    finally:
        channel.close()


def reach_store(uri: str, timeout: float) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
                break
        except OSError as err:
            if time.monotonic() > deadline:
                raise Unreachable(
                    f"cannot reach the MLflow tracking server at {uri} within {timeout:.0f} s "
                    f"({err}): is it running, and is --tracking-uri its address?"
                ) from None
            time.sleep(1)
    check_login(uri)


def check_login(uri: str) -> None:
    """A ConfigError, in one sentence, where the server at `uri` refuses this process's
    login (MLflow's MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD): MLflow's
    client would only say so at the first write, as an HTTP error."""
    request = urllib.request.Request(
        f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    )
    user = os.environ.get(USERNAME_VARIABLE)
    password = os.environ.get(PASSWORD_VARIABLE)
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30):
            return
    except urllib.error.HTTPError as err:
        if err.code not in (401, 403):
            return  # not a login matter: MLflow's own calls will say what it is
        if not (user and password):
            raise ConfigError(
                f"the MLflow tracking server at {uri} asks for a user and password: give "
                f"them in {USERNAME_VARIABLE} and {PASSWORD_VARIABLE} (for a server a "
                "sweep's chief started, its join line says where the password is)"
            ) from None
        raise ConfigError(
            f"the MLflow tracking server at {uri} refuses user {user!r} with the password "
            f"in {PASSWORD_VARIABLE}: check both variables"
        ) from None
    except OSError:
        return  # reached a moment ago: MLflow's own calls will say what went wrong


def sweep_config(store, run_id: str, overrides: list[str]):
    """The config the chief runs (the latest it recorded), with this worker's overrides."""
    run = store.run(run_id, "sweep run")
    if run.data.tags.get(names.ROLE) != names.ROLE_SWEEP:
        raise ConfigError(f"run {run_id} in {store.uri} is not a happysad sweep's run")
    resumes = int(run.data.tags.get(names.RESUMES, "0"))
    path = f"config/config.resume-{resumes}.yaml" if resumes else "config/config.yaml"
    values = yaml.safe_load(store.read_text(run_id, path))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"{bad[0]!r} is not key=value (e.g. data.path=/data/faces)")
        merged = OmegaConf.merge(OmegaConf.create(values), OmegaConf.from_dotlist(overrides))
        values = OmegaConf.to_container(merged)
    return recorded_config(values), run


def chief_budget(cfg, run):
    """The sweep's time budget as its chief keeps it: its trials stop at the chief's
    deadline (the chief alone decides when no new trial starts)."""
    deadline = run.data.tags.get(names.DEADLINE)
    if not cfg.tuner.time_budget or deadline is None:
        return None
    return Budget.ending_at(float(deadline), parse(cfg.tuner.time_budget))


def work(args, me: str) -> None:
    """Join the sweep `args` name as the worker `me`, and train its trials until the
    search ends."""
    host, _, port = args.chief.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--chief {args.chief!r} is not host:port")
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError("give the sweep's tracking server: --tracking-uri or MLFLOW_TRACKING_URI")
    store = Store(uri)  # a server's credentials in the URI move to MLflow's variables
    log.info(
        f"happysad worker {me}: chief {args.chief}, MLflow {store.uri}, sweep run {args.sweep_run}"
    )
    reach_store(store.connect_uri, args.connect_timeout)
    reach_chief(args.chief, args.connect_timeout)
    cfg, run = sweep_config(store, args.sweep_run, args.overrides)
    images = dataset.load(cfg.data)
    expected = run.data.tags.get(names.DATA_DIGEST)
    if images.digest != expected:
        raise DataError(
            f"this worker's data ({cfg.data.source} at {getattr(cfg.data, 'path', None)}) are not "
            f"the sweep's images (digest {images.digest}, the sweep's {expected}): point it at "
            "the same images, e.g. data.path=<their folder on this machine>"
        )
    startup_log = Path(cfg.sweep.dir) / cfg.sweep.name / "workers" / f"{me}.startup.log"
    startup_log.unlink(missing_ok=True)
    with startup.stderr_to(startup_log):
        # Keras, keras-tuner and TensorFlow, whose C++ start-up lines go to the log.
        from happysad.search import session as search_session  # heavy: after the data

    session = search_session.open_session(
        cfg,
        store,
        search_session.Role.WORKER,
        images,
        startup_log=startup_log,
        backbone_folder=Path(cfg.data.cache_dir) / "backbones" / cfg.sweep.name / me,
    )
    sweep = SweepRun(store, run.info.experiment_id, cfg.sweep.name)
    sweep.join(args.sweep_run, images.summary())
    quiet_run_links()
    # keras-tuner's client waits an hour for a chief that is gone; this worker, as long
    # as it waits for one at its start.
    search_session.as_worker(me, host, int(port), args.connect_timeout)
    tuner = session.tuner(sweep, sweep.previous_trials(), chief_budget(cfg, run))
    import grpc

    try:
        tuner.search(session.images, verbose=0)
    except grpc.RpcError as err:
        raise Unreachable(
            f"lost the sweep's chief at {args.chief} ({err.code().name}: {err.details()}): "
            "the sweep's runs say how far it got; the chief's own output says why it stopped"
        ) from None
    except KeyboardInterrupt:
        if sweep.trial_run_id is not None:
            _mark_killed(sweep, f"stopped: its worker {me} was stopped during this trial")
        raise
    log.info(f"worker {me}: the search has ended")


def _mark_killed(sweep, reason: str, limit: float = 10) -> None:
    """The trial's run marked KILLED, if the tracking server answers soon: when the chief
    is going down it is too, and MLflow's client would retry for minutes. A run left
    RUNNING is marked KILLED by the chief when the sweep is continued."""
    writer = threading.Thread(target=sweep.end_trial, args=(names.KILLED, reason), daemon=True)
    writer.start()
    writer.join(limit)
