"""`python -m happysad.worker`: join a running distributed sweep and train its trials.

`distributed=local` starts its workers itself; this is the command for the workers
happysad does not start (another machine, a SLURM array, a Kubernetes Indexed Job):

    python -m happysad.worker --chief 10.0.0.5:8470 --tracking-uri http://10.0.0.5:5000 \\
        --sweep-run <the sweep's MLflow run id> [data.path=/where/the/images/are/here]

The worker reads the sweep's config from its MLflow run (what the chief recorded, so
every worker trains the same way), loads the data and checks that they are the
sweep's images (the digest of their pixels), then asks the chief's oracle for trials
until the search ends, recording each trial as a nested run of the sweep, tagged
`happysad.worker=<its keras-tuner id>`. Its id: --id, else KERASTUNER_TUNER_ID, else
tuner<N> from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX. A worker started again
under the same id gets back the trial it held.

It gives up, saying which address it could not reach, when the chief or the tracking
server does not answer within --connect-timeout seconds (keras-tuner's own client
would wait an hour).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from happysad.errors import ConfigError, DataError, HappysadError, Unreachable  # noqa: E402

log = logging.getLogger("happysad")

ID_VARIABLES = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")  # a scheduler's task index


def tuner_id(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("KERASTUNER_TUNER_ID"):
        return os.environ["KERASTUNER_TUNER_ID"]
    for variable in ID_VARIABLES:
        if os.environ.get(variable, "").isdigit():
            return f"tuner{os.environ[variable]}"
    raise ConfigError(
        "the worker has no id: give --id tuner<N> (each worker of a sweep its own), or "
        f"set KERASTUNER_TUNER_ID, or run it where {' or '.join(ID_VARIABLES)} is set"
    )


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
                return
        except OSError as err:
            if time.monotonic() > deadline:
                raise Unreachable(
                    f"cannot reach the MLflow tracking server at {uri} within {timeout:.0f} s "
                    f"({err}): is it running, and is --tracking-uri its address?"
                ) from None
            time.sleep(1)


def sweep_config(store, run_id: str, overrides: list[str]):
    """The config the chief runs (the latest it recorded), with this worker's overrides."""
    import yaml
    from omegaconf import OmegaConf

    from happysad.config.composition import recorded_config
    from happysad.tracking import names

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
    from happysad.search.budget import Budget, parse
    from happysad.tracking import names

    deadline = run.data.tags.get(names.DEADLINE)
    if not cfg.tuner.time_budget or deadline is None:
        return None
    return Budget.ending_at(float(deadline), parse(cfg.tuner.time_budget))


def work(args: argparse.Namespace) -> None:
    from happysad.results import console as progress
    from happysad.tracking import names
    from happysad.tracking.store import Store

    me = tuner_id(args.id)
    host, _, port = args.chief.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--chief {args.chief!r} is not host:port")
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError("give the sweep's tracking server: --tracking-uri or MLFLOW_TRACKING_URI")
    log.info(f"happysad worker {me}: chief {args.chief}, MLflow {uri}, sweep run {args.sweep_run}")
    reach_store(uri, args.connect_timeout)
    reach_chief(args.chief, args.connect_timeout)
    store = Store(uri)
    cfg, run = sweep_config(store, args.sweep_run, args.overrides)

    from happysad.config import search_space
    from happysad.data import dataset as data_module
    from happysad.model.hypermodel import FaceHyperModel
    from happysad.search import startup, tuning
    from happysad.search.distribute.chief import quiet_keras_tuner
    from happysad.tracking.runs import SweepRun

    images = data_module.load(cfg.data)
    expected = run.data.tags.get(names.DATA_DIGEST)
    if images.digest != expected:
        raise DataError(
            f"this worker's data ({cfg.data.source} at {getattr(cfg.data, 'path', None)}) are not "
            f"the sweep's images (digest {images.digest}, the sweep's {expected}): point it at "
            "the same images, e.g. data.path=<their folder on this machine>"
        )
    folder = Path(cfg.sweep.dir) / cfg.sweep.name
    startup_log = folder / "workers" / f"{me}.startup.log"
    log.info(startup.start_tensorflow(startup_log, trial_server=cfg.sweep.isolate_trials))
    progress.data_summary(images)
    backbones = {}
    if search_space.backbones(cfg):
        from happysad.model import transfer

        backbones = transfer.prepare(
            cfg, store, images, Path(cfg.data.cache_dir) / "backbones" / cfg.sweep.name / me
        )
    sweep = SweepRun(store, run.info.experiment_id, cfg.sweep.name)
    sweep.join(args.sweep_run, images.summary())
    quiet_keras_tuner()
    from keras_tuner.src.distribute import oracle_client

    # keras-tuner's client waits an hour for a chief that is gone; this worker, as long
    # as it waits for one at its start.
    oracle_client.TIMEOUT = args.connect_timeout
    os.environ.update(
        KERASTUNER_TUNER_ID=me, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=port
    )
    hypermodel = FaceHyperModel(cfg, images.input_shape, len(images.train), backbones=backbones)
    tuner = tuning.make_tuner(
        cfg,
        hypermodel,
        cfg.sweep.dir,
        cfg.sweep.name,
        sweep=sweep,
        data=images,
        previous=sweep.previous_trials(),
        budget=chief_budget(cfg, run),
    )
    import grpc

    try:
        tuner.search(images, verbose=0)
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
    import threading

    from happysad.tracking import names

    writer = threading.Thread(target=sweep.end_trial, args=(names.KILLED, reason), daemon=True)
    writer.start()
    writer.join(limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m happysad.worker",
        description="Join a running distributed happysad sweep and train its trials.",
    )
    parser.add_argument("--chief", required=True, help="the chief's oracle, host:port")
    parser.add_argument(
        "--tracking-uri", help="the sweep's MLflow tracking server (or MLFLOW_TRACKING_URI)"
    )
    parser.add_argument("--sweep-run", required=True, help="the sweep's MLflow run id")
    parser.add_argument("--id", help="this worker's keras-tuner id, e.g. tuner3")
    parser.add_argument("--connect-timeout", type=float, default=60, metavar="SECONDS")
    parser.add_argument(
        "overrides", nargs="*", help="key=value for this machine, e.g. data.path=/data/faces"
    )
    args = parser.parse_args(argv)
    from happysad.search.distribute.chief import CORES_VARIABLE

    cores = os.environ.get(CORES_VARIABLE)  # distributed=local's share of the cores
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    from happysad.search.startup import signals_stop

    try:
        with signals_stop():
            work(args)
    except KeyboardInterrupt:
        log.warning("worker stopped")
        return 130
    except HappysadError as err:
        log.error(f"error: {err}")
        return 2 if isinstance(err, ConfigError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
