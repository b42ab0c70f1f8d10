"""One search session: what a search needs, built the same way on every path.

A local sweep, a distributed sweep's chief and a worker (`python -m happysad.worker`)
each load and check their data, then import this module with TensorFlow's start-up
lines going to a log (importing it imports Keras and keras-tuner, and so TensorFlow:
see `startup.importing`), then call `open_session`: TensorFlow started (and the trial
processes' server), the disk checked and the experiment opened (where the process owns
the sweep), the backbones fetched and checked, and the hypermodel. The session then
makes the tuner and runs the search. Pretraining shares the store's opening
(`open_store`) and TensorFlow's start.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from happysad.config import search_space
from happysad.config.schema import Config
from happysad.data.dataset import ImageData
from happysad.model import transfer
from happysad.model.hypermodel import FaceHyperModel
from happysad.results import console
from happysad.search import kt_internals, preflight, startup, training, tuning
from happysad.search.budget import Budget
from happysad.tracking.runs import SweepRun
from happysad.tracking.store import Store, local_artifact_root
from happysad.trials import TrialRecord

log = logging.getLogger("happysad")


class Role(Enum):
    """What the process does in the search."""

    LOCAL = "local"  # draws, trains (in trial processes) and records: a local sweep
    CHIEF = "chief"  # a distributed sweep's chief: serves the oracle, records, never trains
    WORKER = "worker"  # a distributed sweep's worker: trains and records the chief's trials


@dataclass
class Session:
    """What a search needs, once `open_session` has built it."""

    cfg: Config
    store: Store
    role: Role
    images: ImageData
    startup_log: Path
    experiment_id: str | None = None  # opened here by a local sweep or a chief
    backbones: dict[str, transfer.Backbone] = field(default_factory=dict)
    hypermodel: FaceHyperModel | None = None

    def tuner(
        self,
        sweep: SweepRun | None = None,
        previous: list[TrialRecord] = (),
        budget: Budget | None = None,
    ) -> Any:
        """keras-tuner's tuner over the session's hypermodel: with `sweep`, one that trains
        and records its trials (a local sweep, a worker); without, the bare algorithm (a
        distributed sweep's chief serves its oracle)."""
        cfg = self.cfg
        jobs = None
        if sweep is not None:
            jobs = training.Jobs(
                cfg=cfg,
                data=self.images,
                objective=cfg.tuner.objective.value,
                maximize=cfg.tuner.objective.direction == "max",
                backbones=self.backbones,
                budget=budget,
                tracking_uri=sweep.store.connect_uri,
            )
        return tuning.make_tuner(
            cfg,
            self.hypermodel,
            cfg.sweep.dir,
            cfg.sweep.name,
            sweep=sweep,
            jobs=jobs,
            previous=list(previous),
            budget=budget,
        )


def as_worker(tuner_id: str, host: str, port: int, connect_timeout: float) -> None:
    """This process becomes worker `tuner_id` of the chief at host:port: keras-tuner's
    tuners made from now on ask the chief's oracle for their trials (keras-tuner reads
    its distributed mode from the environment), and its client waits for the chief at
    most `connect_timeout` seconds (keras-tuner's own: an hour)."""
    os.environ.update(
        KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=str(port)
    )
    kt_internals.client_timeout(connect_timeout)


def open_session(
    cfg: Config,
    store: Store,
    role: Role,
    images: ImageData,
    startup_log: Path,
    backbone_folder: Path,
) -> Session:
    """Build what the search on `images` needs; raises a HappysadError the user can act on."""
    # TensorFlow's own start-up lines go to startup_log, recorded on the sweep's run. The
    # trial processes' server starts meanwhile, where trials train in their own
    # processes; a chief never trains: its workers have the trial processes and GPUs.
    trains_here = role is not Role.CHIEF
    devices = startup.start_tensorflow(
        startup_log,
        trial_server=training.start if trains_here and cfg.sweep.isolate_trials else None,
        trains_here=trains_here,
    )
    console.data_summary(images)
    log.info(devices)
    session = Session(cfg=cfg, store=store, role=role, images=images, startup_log=startup_log)
    if role is not Role.WORKER:  # the sweep's owner: its models' disk, its experiment
        artifacts = local_artifact_root(store.uri)
        preflight.check_disk(
            cfg, images.input_shape[2], [Path(cfg.sweep.dir), *([artifacts] if artifacts else [])]
        )
        session.experiment_id = store.open_experiment(cfg.mlflow.experiment)
        log.info(f"MLflow store: {store.uri} (experiment '{cfg.mlflow.experiment}')")
    if search_space.backbones(cfg):
        # Fetched and checked against the data before anything is recorded or trained.
        session.backbones = transfer.prepare(cfg, store, images, backbone_folder)
        if role is not Role.WORKER:
            log.info(f"backbones: {', '.join(session.backbones)} (their blocks fit the data)")
    session.hypermodel = FaceHyperModel(
        cfg, images.input_shape, len(images.train), backbones=session.backbones
    )
    return session
