"""`python -m happysad.sweep`: compose the config, search, record every trial in MLflow.

The Hydra entry point is a thin wrapper; `run_sweep` is the plain function that
does the work, and the one tests call with a composed config.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# Before TensorFlow is imported anywhere: keep its C++ start-up chatter off the console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from happysad.config import search_space
from happysad.config.composition import config_dir, register_configs, to_typed  # noqa: E402
from happysad.config.schema import Config  # noqa: E402
from happysad.errors import ConfigError, HappysadError, SweepFailed, SweepInterrupted  # noqa: E402
from happysad.results import console as progress  # noqa: E402
from happysad.trials import TrialRecord, best_by  # noqa: E402

log = logging.getLogger("happysad")

register_configs()


@dataclass
class SweepResult:
    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    results: list[TrialRecord]
    best: TrialRecord | None
    test_metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: str | None = None
    budget_ended: str | None = None  # how the time budget ended the search

    @property
    def failed(self) -> list[TrialRecord]:
        return [r for r in self.results if r.score is None]


def fresh_name() -> str:
    return f"sweep-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_sweep(
    cfg: DictConfig, overrides: Sequence[str] = (), tags: dict[str, str] | None = None
) -> SweepResult:
    """Run one sweep as configured, or continue the named sweep where it stopped.

    Raises a HappysadError the user can act on; `tags` go on the sweep's parent run
    (the entry point passes the multirun's id)."""
    typed = to_typed(cfg)
    typed.sweep.name = typed.sweep.name or fresh_name()
    name = typed.sweep.name
    from happysad.search import resume

    if typed.sweep.restart:
        resume.clear(typed)
    state = resume.read(typed)

    # Heavy imports only now that the config is known to be good.
    from happysad.search import preflight
    from happysad.tracking.store import Store, local_artifact_root

    started = time.monotonic()
    action = "continuing" if state else "starting"
    log.info(
        f"happysad: {action} sweep '{name}': tuner {typed.tuner.name.value}, "
        f"objective {typed.tuner.objective.value}"
    )
    # The preflight: what would otherwise fail later, checked before the first trial.
    preflight.check_packages()
    store = Store.resolve(typed.mlflow.tracking_uri)
    artifacts = local_artifact_root(store.uri)
    preflight.check_store(store.uri, artifacts)
    from happysad.search.distribute import chief as distributed

    # A distributed sweep's tracking server starts first: it comes up while the data
    # load and TensorFlow is imported.
    with distributed.tracking_server(typed, store.uri) as server:
        return _run_sweep(cfg, typed, overrides, tags, state, store, server, started)


def _run_sweep(
    cfg: DictConfig, typed: Config, overrides, tags, state, store, server, started: float
) -> SweepResult:
    """run_sweep's work once its store is known (and served, for a distributed sweep)."""
    from happysad.data import dataset as data_module
    from happysad.search import preflight, resume
    from happysad.tracking import names
    from happysad.tracking.runs import SweepRun
    from happysad.tracking.store import local_artifact_root

    name = typed.sweep.name
    uri = store.uri
    artifacts = local_artifact_root(uri)
    images = data_module.load(typed.data)
    from happysad.search import startup

    # The trial processes' server imports TensorFlow meanwhile; TensorFlow's own
    # start-up lines go to the sweep's startup.log, recorded on its run.
    startup_log = Path(typed.sweep.dir) / name / "startup.log"
    startup_log.unlink(missing_ok=True)
    # A distributed sweep's chief never trains: its workers have the trial processes
    # and the GPUs.
    devices = startup.start_tensorflow(
        startup_log,
        trial_server=typed.sweep.isolate_trials and not typed.distributed.enabled,
        trains_here=not typed.distributed.enabled,
    )
    progress.data_summary(images)
    log.info(devices)
    preflight.check_disk(
        typed, images.input_shape[2], [Path(typed.sweep.dir), *([artifacts] if artifacts else [])]
    )
    experiment_id = store.open_experiment(typed.mlflow.experiment)
    log.info(f"MLflow store: {uri} (experiment '{typed.mlflow.experiment}')")

    backbones = {}
    if search_space.backbones(typed):
        from happysad.model import transfer

        # Fetched and checked against the data before anything is recorded or trained.
        backbones = transfer.prepare(
            typed, store, images, Path(typed.data.cache_dir) / "backbones" / name
        )
        log.info(f"backbones: {', '.join(backbones)} (their blocks fit the data)")
    fingerprint = resume.fingerprint(typed, images.digest)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["sweep"]["name"] = name
    config_yaml = OmegaConf.to_yaml(resolved)
    sweep = SweepRun(store, experiment_id, name, startup_log=startup_log)
    if state is not None:
        resume.check_continuable(state, typed, fingerprint, uri)
        previous = _continue(sweep, state, config_yaml, overrides, images)
    else:
        space = search_space.summary(typed)
        sweep.start(
            config_yaml=config_yaml,
            overrides=list(overrides),
            params=_sweep_params(typed),
            data_summary=images.summary(),
            skipped=images.skipped,
            search_space=space,
            tags=tags,
        )
        resume.write(typed, resume.SweepState(name, uri, experiment_id, sweep.run_id, fingerprint))
        previous = []
        log.info("search space:")
        for key, text in space.items():
            log.info(f"  {key:<28} {text}")
    if typed.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    try:
        result = _search(typed, images, sweep, previous, backbones, server)
    except KeyboardInterrupt:
        sweep.end(names.KILLED, reason="stopped by the user (Ctrl-C or SIGTERM)")
        again = " ".join(
            [*(o for o in overrides if not o.startswith("sweep.name=")), f"sweep.name={name}"]
        )
        raise SweepInterrupted(
            f"sweep '{name}' stopped; its trial and sweep runs are marked KILLED in MLflow. "
            f"To go on where it stopped: python -m happysad.sweep {again}"
        ) from None
    except BaseException as err:
        sweep.end(names.FAILED, reason=f"{type(err).__name__}: {err}")
        raise
    progress.sweep_summary(result, typed, time.monotonic() - started)
    if result.best is None or result.stopped_early:
        reasons = "; ".join(f"trial-{r.trial_id}: {r.reason}" for r in result.failed[:3])
        what = result.stopped_early or "every trial failed"
        raise SweepFailed(f"sweep '{name}': {what}. First reasons: {reasons}")
    return result


def _continue(
    sweep, state, config_yaml: str, overrides: Sequence[str], images
) -> list[TrialRecord]:
    """Reopen the sweep's parent run; close what a hard kill left running."""
    from happysad.errors import StoreError

    try:
        resumed = sweep.resume(
            state.parent_run_id,
            config_yaml=config_yaml,
            overrides=list(overrides),
            data_summary=images.summary(),
        )
    except StoreError as err:
        raise ConfigError(
            f"sweep '{state.name}': {err}: add sweep.restart=true to start it afresh"
        ) from err
    killed = sweep.close_interrupted_trials()
    previous = sweep.previous_trials()
    log.info(
        f"sweep '{state.name}' continued (time {resumed}): {len(previous)} trials recorded so far"
    )
    if killed:
        log.warning(
            f"marked KILLED the runs of trials interrupted earlier: "
            f"{', '.join('trial-' + t for t in killed)}; they run again"
        )
    return previous


def _search(cfg: Config, images, sweep, previous: list, backbones: dict, server) -> SweepResult:
    from happysad.model.hypermodel import FaceHyperModel
    from happysad.search import tuning

    hypermodel = FaceHyperModel(cfg, images.input_shape, len(images.train), backbones=backbones)
    budget = None
    if cfg.tuner.time_budget:
        from happysad.search.budget import Budget, parse, wall_time

        # Across continued runs: what the trials recorded so far took counts (once, for
        # trials that ran side by side).
        spent = wall_time((r.started, r.started + r.seconds) for r in previous if r.started)
        budget = Budget(parse(cfg.tuner.time_budget), spent=spent)
    if cfg.distributed.enabled:
        return _search_distributed(cfg, images, sweep, hypermodel, server, budget, previous)
    tuner = tuning.make_tuner(
        cfg,
        hypermodel,
        cfg.sweep.dir,
        cfg.sweep.name,
        sweep=sweep,
        data=images,
        previous=previous,
        budget=budget,
    )
    stopped = None
    try:
        tuner.search(images, verbose=0)
    except RuntimeError as err:
        # keras-tuner's stop after max_consecutive_failed_trials failures in a row.
        if "consecutive failures" not in str(err):
            raise
        stopped = f"stopped after {cfg.tuner.max_consecutive_failures} failed trials in a row"
    return _finish(cfg, tuner, sweep, images, tuner.results, stopped, _budget_ended(cfg, budget))


def _budget_ended(cfg: Config, budget) -> str | None:
    if budget is None or not budget.ended:
        return None
    from happysad.search.budget import describe

    return (
        f"the time budget ({cfg.tuner.time_budget}) ended the search after "
        f"{describe(budget.used())} of trials"
    )


def _search_distributed(
    cfg: Config, images, sweep, hypermodel, server, budget, previous: list
) -> SweepResult:
    """The chief of a distributed sweep: it serves the oracle, its workers train and
    record the trials; the sweep ends as a local one does, from what they recorded."""
    from happysad.search import tuning
    from happysad.search.distribute import chief as distributed

    tuner = tuning.make_tuner(cfg, hypermodel, cfg.sweep.dir, cfg.sweep.name)
    results = distributed.search(cfg, sweep, tuner, server, budget, previous)
    return _finish(cfg, tuner, sweep, images, results, None, _budget_ended(cfg, budget))


def _finish(
    cfg: Config, tuner, sweep, images, results: list, stopped: str | None, budget_ended
) -> SweepResult:
    """The report on the sweep's run: the best trial, and its model on the test split."""
    from happysad.results import report
    from happysad.tracking import names

    maximize = tuner.oracle.objective.direction == "max"
    best = best_by(results, maximize)
    result = SweepResult(
        name=cfg.sweep.name,
        tracking_uri=sweep.store.uri,
        experiment_id=sweep.experiment_id,
        parent_run_id=sweep.run_id,
        results=results,
        best=best,
        stopped_early=stopped,
        budget_ended=budget_ended,
    )
    # The test split is looked at once, here, and never for choosing a model.
    test_prob = (
        _best_model_probabilities(tuner, sweep.store, best, images)
        if best and len(images.test)
        else None
    )
    outcome = report.build(
        name=cfg.sweep.name,
        tuner=cfg.tuner.name.value,
        objective=cfg.tuner.objective.value,
        maximize=maximize,
        results=result.results,
        best=best,
        test_y=images.test.y,
        test_prob=test_prob,
        data_summary=images.summary(),
        stopped_early=stopped,
    )
    result.test_metrics = {k: v for k, v in outcome.metrics.items() if k.startswith("test_")}
    if result.budget_ended:
        outcome.tags[names.BUDGET] = result.budget_ended
    sweep.finish(status=names.FINISHED if best and not stopped else names.FAILED, outcome=outcome)
    return result


def _best_model_probabilities(tuner, store, best: TrialRecord, images):
    """P(happy) on the test split from the best model: the one logged to MLflow when
    there is one (so the artifact itself is checked), else keras-tuner's checkpoint."""
    from happysad.serving.pyfunc import probabilities

    if best.model_uri:
        model = store.load_keras(best.model_uri)
    else:
        model = tuner.load_model(tuner.oracle.get_trial(best.trial_id))
    return probabilities(model, images.test.x)


def _sweep_params(cfg: Config) -> dict[str, Any]:
    t = cfg.tuner
    return {
        "sweep.name": cfg.sweep.name,
        "seed": cfg.seed,
        "data.source": cfg.data.source,
        "tuner.name": t.name.value,
        "tuner.max_trials": t.max_trials,
        "tuner.epochs": t.epochs,
        "tuner.objective": t.objective.value,
        "tuner.early_stopping_patience": t.early_stopping_patience,
        "tuner.time_budget": t.time_budget or "none",
    }


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    tags = {}
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # The jobs of one `-m` run share its folder: its name identifies the multirun.
        from happysad.tracking import names

        tags = {
            names.MULTIRUN: Path(hydra_cfg.sweep.dir).name,
            names.MULTIRUN_JOB: str(hydra_cfg.job.num),
        }
    # A kill from a job scheduler, or a closed terminal, ends the sweep as cleanly as
    # Ctrl-C does: the trial's process is stopped and the runs are marked KILLED.
    from happysad.search.startup import signals_stop

    try:
        with signals_stop():
            run_sweep(cfg, overrides=list(hydra_cfg.overrides.task), tags=tags)
    except SweepInterrupted as err:
        log.warning(str(err))
        sys.exit(130)
    except HappysadError as err:
        log.error(f"error: {err}")
        sys.exit(2 if isinstance(err, ConfigError) else 1)


if __name__ == "__main__":
    main()
