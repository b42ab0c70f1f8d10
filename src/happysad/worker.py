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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from happysad.errors import ConfigError, HappysadError  # noqa: E402
from happysad.processes import signals_stop  # noqa: E402
from happysad.search.distribute import join  # noqa: E402
from happysad.search.distribute.workers import CORES_VARIABLE  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m happysad.worker",
        description="Join a running distributed happysad sweep and train its trials.",
    )
    parser.add_argument("--chief", required=True, help="the chief's oracle, host:port")
    parser.add_argument(
        "--tracking-uri",
        help="the sweep's MLflow tracking server (or MLFLOW_TRACKING_URI); its credentials in "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, never on the command line",
    )
    parser.add_argument("--sweep-run", required=True, help="the sweep's MLflow run id")
    parser.add_argument("--id", help="this worker's keras-tuner id, e.g. tuner3")
    parser.add_argument("--connect-timeout", type=float, default=60, metavar="SECONDS")
    parser.add_argument(
        "overrides", nargs="*", help="key=value for this machine, e.g. data.path=/data/faces"
    )
    args = parser.parse_args(argv)
    cores = os.environ.get(CORES_VARIABLE)  # distributed=local's share of the cores
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        with signals_stop():
            me = tuner_id(args.id)
            join.work(args, me)
    except KeyboardInterrupt:
        log.warning("worker stopped")
        return 130
    except HappysadError as err:
        log.error(f"error: {err}")
        return 2 if isinstance(err, ConfigError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
