"""`python -m happysad.sweep`: compose the config, search, record every trial in MLflow.

The Hydra entry point is a thin wrapper; `run_sweep` is the plain function that
does the work, and the one tests call with a composed config. A sweep: its store
(served to its workers when distributed), its data, then the search session
(search/session.py) and the search, local or as a distributed sweep's chief
(search/distribute/chief.py), and the report, with the best model evaluated once on
the test split.
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

from happysad.config import search_space  # noqa: E402
from happysad.config.composition import config_dir, register_configs, to_typed  # noqa: E402
from happysad.config.duration import describe, parse  # noqa: E402
from happysad.config.schema import Config  # noqa: E402
from happysad.data import dataset  # noqa: E402
from happysad.errors import (  # noqa: E402
    ConfigError,
    HappysadError,
    StoreError,
    SweepFailed,
    SweepInterrupted,
)
from happysad.processes import signals_stop  # noqa: E402
from happysad.results import console, report  # noqa: E402
from happysad.search import preflight, resume, startup  # noqa: E402
from happysad.search.budget import Budget, wall_time  # noqa: E402
from happysad.search.resume import SweepState  # noqa: E402
from happysad.serving.pyfunc import probabilities  # noqa: E402
from happysad.tracking import names  # noqa: E402
from happysad.tracking.runs import SweepRun  # noqa: E402
from happysad.tracking.server import for_many_writers  # noqa: E402
from happysad.tracking.store import Store, without_credentials  # noqa: E402
from happysad.trials import TrialRecord, best_by  # noqa: E402

log = logging.getLogger("happysad")

register_configs()


def fresh_name() -> str:
    return f"sweep-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_sweep(
    cfg: DictConfig, overrides: Sequence[str] = (), tags: dict[str, str] | None = None
) -> SweepResult:
    """Run one sweep as configured, or continue the named sweep where it stopped.

    Raises a HappysadError the user can act on; `tags` go on the sweep's parent run
    (the entry point passes the multirun's id)."""
    typed = to_typed(cfg)
    uri = typed.mlflow.tracking_uri
    if uri and without_credentials(uri) != uri:
        log.warning(
            "mlflow.tracking_uri carries credentials: happysad records and passes on the URI "
            "without them, but this command's own line shows them to every user of the "
            "machine (ps) and keeps them in your shell history; give them in "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead"
        )
    typed.sweep.name = typed.sweep.name or fresh_name()
    if typed.sweep.restart:
        resume.clear(typed)
    state = resume.read(typed)
    return run(
        SweepContext(
            composed=cfg,
            cfg=typed,
            overrides=[without_credentials(o) for o in overrides],
            tags=tags or {},
            state=state,
        )
    )


@dataclass
class SweepContext:
    """What one run of a sweep works with: the config as composed (recorded as it is)
    and typed, the command line's overrides, tags for its run, its state on disk (None
    for a new sweep), and, once opened, its store and tracking server."""

    composed: DictConfig
    cfg: Config
    overrides: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    state: SweepState | None = None
    started: float = field(default_factory=time.monotonic)
    store: Store | None = None
    server: Any = None  # tracking.server.Server: a distributed sweep's own mlflow server

    @property
    def name(self) -> str:
        return self.cfg.sweep.name


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


def run(ctx: SweepContext) -> SweepResult:
    """Run the sweep, or continue it where it stopped; raises a HappysadError the user
    can act on."""
    cfg = ctx.cfg
    action = "continuing" if ctx.state else "starting"
    log.info(
        f"happysad: {action} sweep '{ctx.name}': tuner {cfg.tuner.name.value}, "
        f"objective {cfg.tuner.objective.value}"
    )
    # The preflight: what would otherwise fail later, checked before the first trial.
    ctx.store = preflight.open_store(cfg.mlflow.tracking_uri)
    # A distributed sweep's tracking server starts first: it comes up while the data
    # load and TensorFlow is imported.
    with for_many_writers(ctx.store.connect_uri, many=cfg.distributed.enabled) as ctx.server:
        return _run(ctx)


def _run(ctx: SweepContext) -> SweepResult:
    cfg, store = ctx.cfg, ctx.store
    images = dataset.load(cfg.data)  # bad data fails here, before anything heavy
    startup_log = resume.folder(cfg) / "startup.log"
    startup_log.unlink(missing_ok=True)
    with startup.stderr_to(startup_log):
        # Keras, keras-tuner and TensorFlow, whose C++ start-up lines go to the log.
        from happysad.search import session as search_session  # heavy: after the data
        from happysad.search.distribute import chief  # heavy: after the data
    session = search_session.open_session(
        cfg,
        store,
        search_session.Role.CHIEF if cfg.distributed.enabled else search_session.Role.LOCAL,
        images,
        startup_log=startup_log,
        backbone_folder=Path(cfg.data.cache_dir) / "backbones" / ctx.name,
    )
    fingerprint = resume.fingerprint(cfg, images.digest)
    resolved = OmegaConf.to_container(ctx.composed, resolve=True)
    resolved["sweep"]["name"] = ctx.name
    # Recorded as the run's artifact: no URI in it carries a password.
    config_yaml = without_credentials(OmegaConf.to_yaml(resolved))
    sweep = SweepRun(store, session.experiment_id, ctx.name, startup_log=session.startup_log)
    if ctx.state is not None:
        resume.check_continuable(ctx.state, cfg, fingerprint, store.uri)
        previous = _continue(sweep, ctx.state, config_yaml, ctx.overrides, images)
    else:
        space = search_space.summary(cfg)
        sweep.start(
            config_yaml=config_yaml,
            overrides=ctx.overrides,
            params=_sweep_params(cfg),
            data_summary=images.summary(),
            skipped=images.skipped,
            search_space=space,
            tags=ctx.tags,
        )
        resume.write(
            cfg, SweepState(ctx.name, store.uri, session.experiment_id, sweep.run_id, fingerprint)
        )
        previous = []
        log.info("search space:")
        for key, text in space.items():
            log.info(f"  {key:<28} {text}")
    if cfg.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    try:
        result = _search(ctx, session, chief, sweep, previous)
    except KeyboardInterrupt:
        sweep.end(names.KILLED, reason="stopped by the user (Ctrl-C or SIGTERM)")
        again = " ".join(
            [
                *(o for o in ctx.overrides if not o.startswith("sweep.name=")),
                f"sweep.name={ctx.name}",
            ]
        )
        raise SweepInterrupted(
            f"sweep '{ctx.name}' stopped; its trial and sweep runs are marked KILLED in MLflow. "
            f"To go on where it stopped: python -m happysad.sweep {again}"
        ) from None
    except BaseException as err:
        sweep.end(names.FAILED, reason=f"{type(err).__name__}: {err}")
        raise
    console.sweep_summary(result, cfg, time.monotonic() - ctx.started)
    if result.best is None or result.stopped_early:
        reasons = "; ".join(f"trial-{r.trial_id}: {r.reason}" for r in result.failed[:3])
        what = result.stopped_early or "every trial failed"
        raise SweepFailed(f"sweep '{ctx.name}': {what}. First reasons: {reasons}")
    return result


def _continue(
    sweep: SweepRun, state: SweepState, config_yaml: str, overrides: list[str], images
) -> list[TrialRecord]:
    """Reopen the sweep's parent run; close what a hard kill left running."""
    try:
        resumed = sweep.resume(
            state.parent_run_id,
            config_yaml=config_yaml,
            overrides=overrides,
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


def _search(ctx: SweepContext, session, chief, sweep: SweepRun, previous: list[TrialRecord]):
    """The search: local, or served to the workers by this process, the chief
    (`chief`: search.distribute.chief, imported with the session)."""
    cfg = ctx.cfg
    budget = None
    if cfg.tuner.time_budget:
        # Across continued runs: what the trials recorded so far took counts (once, for
        # trials that ran side by side).
        spent = wall_time((r.started, r.started + r.seconds) for r in previous if r.started)
        budget = Budget(parse(cfg.tuner.time_budget), spent=spent)
    if cfg.distributed.enabled:
        # The chief: it serves the oracle, its workers train and record the trials; the
        # sweep ends as a local one does, from what they recorded.
        tuner = session.tuner()
        results = chief.search(cfg, sweep, tuner, ctx.server, budget, previous)
        return _finish(cfg, tuner, sweep, session, results, None, _budget_ended(cfg, budget))
    tuner = session.tuner(sweep, previous, budget)
    stopped = None
    try:
        tuner.search(session.images, verbose=0)
    except RuntimeError as err:
        # keras-tuner's stop after max_consecutive_failed_trials failures in a row.
        if "consecutive failures" not in str(err):
            raise
        stopped = f"stopped after {cfg.tuner.max_consecutive_failures} failed trials in a row"
    return _finish(cfg, tuner, sweep, session, tuner.results, stopped, _budget_ended(cfg, budget))


def _budget_ended(cfg: Config, budget: Budget | None) -> str | None:
    if budget is None or not budget.ended:
        return None
    return (
        f"the time budget ({cfg.tuner.time_budget}) ended the search after "
        f"{describe(budget.used())} of trials"
    )


def _finish(
    cfg: Config,
    tuner,
    sweep: SweepRun,
    session,
    results: list[TrialRecord],
    stopped: str | None,
    budget_ended: str | None,
) -> SweepResult:
    """The report on the sweep's run: the best trial, and its model on the test split."""
    images = session.images
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


def _best_model_probabilities(tuner, store: Store, best: TrialRecord, images):
    """P(happy) on the test split from the best model: the one logged to MLflow when
    there is one (so the artifact itself is checked), else keras-tuner's checkpoint."""
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
        tags = {
            names.MULTIRUN: Path(hydra_cfg.sweep.dir).name,
            names.MULTIRUN_JOB: str(hydra_cfg.job.num),
        }
    # A kill from a job scheduler, or a closed terminal, ends the sweep as cleanly as
    # Ctrl-C does: the trial's process is stopped and the runs are marked KILLED.
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
