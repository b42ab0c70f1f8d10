"""`python -m happysad.promote`: make a sweep's best model *the* model, safely.

The candidate (the best finished trial of the latest sweep, of `sweep.name`, or the
trial `promote.run_id`) and the current champion are evaluated on the same held-out
test split: the candidate sweep's, rebuilt from its recorded config and checked
against its recorded data digest. The candidate is registered as a version of
`promote.model_name` (once per run), and the alias `champion` moves to it only if it
is at least as good on `promote.metric` (plus `promote.margin`); the version it
replaces gets the alias `previous`. `promote.force=true` moves it anyway;
`promote.dry_run=true` decides and writes nothing. `promote.exports=[litert:int8,onnx]`
exports the candidate too, each file checked before the version is registered (see
happysad.export). Every version registered or promoted gets a model card
(`model_card.md` on its run, and its description: results/card.py).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from happysad.config.composition import (  # noqa: E402
    config_dir,
    register_configs,
)
from happysad.config.schema import PromoteConfig  # noqa: E402
from happysad.config.validation import (  # noqa: E402
    check_ensemble,
    check_model_name,
    check_sweep_name,
)
from happysad.errors import (  # noqa: E402
    ConfigError,
    HappysadError,
    StoreError,
)
from happysad.export import Prepared, exports_of, parse_spec, record  # noqa: E402
from happysad.results import card  # noqa: E402
from happysad.results.evaluation import binary_metrics  # noqa: E402
from happysad.results.splits import sweep_images  # noqa: E402
from happysad.serving.pyfunc import probabilities  # noqa: E402
from happysad.tracking import (
    names,  # noqa: E402
    registry,  # noqa: E402
)
from happysad.tracking.names import CHAMPION, PREVIOUS  # noqa: E402
from happysad.tracking.store import (  # noqa: E402
    Store,
    resolve_tracking_uri,
    without_credentials,
)

log = logging.getLogger("happysad")
register_configs()


@dataclass
class Contender:
    """A model in the comparison: the candidate, or the current champion."""

    run_id: str
    trial_id: str
    sweep: str
    model_uri: str
    data_digest: str
    version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Decision:
    candidate: Contender
    champion: Contender | None
    promoted: bool
    reason: str
    registered: bool
    dry_run: bool


def promote(cfg: PromoteConfig) -> Decision:
    """Evaluate, register and (maybe) promote; raises a HappysadError the user can act on."""
    # Before the store is opened: a name MLflow cannot search for records nothing.
    check_sweep_name(cfg.sweep.name)
    check_model_name(cfg.promote.model_name, "promote.model_name")
    specs = [parse_spec(spec) for spec in cfg.promote.exports]
    log.info(f"MLflow store: {without_credentials(resolve_tracking_uri(cfg.mlflow.tracking_uri))}")
    if cfg.promote.ensemble is not None:
        check_ensemble(cfg.promote)
    store = Store.existing(cfg.mlflow.tracking_uri)
    settings = cfg.promote
    if settings.ensemble is not None:
        candidate, test = _ensemble_candidate(store, cfg)
    else:
        candidate, sweep_run = _candidate(store, cfg)
        test = _test_split(store, sweep_run)
        candidate.metrics = _evaluate(store, candidate.model_uri, test)
    # Checked before anything is registered: a refused export registers nothing.
    exports = [] if settings.dry_run else exports_of(store, candidate.model_uri, specs)
    metric = settings.metric.value
    # Read the champion, decide and write as one step: a lock for a local store; a
    # tracking server takes none, so there the champion is checked again after the write.
    with registry.gate(store) as locked:
        champion = _champion(store, settings.model_name)
        if champion is not None:
            if champion.data_digest != candidate.data_digest:
                log.warning(
                    f"the champion (version {champion.version}) was trained on other data "
                    f"(digest {champion.data_digest}) than the candidate "
                    f"({candidate.data_digest}): both are compared on the candidate's test split"
                )
            champion.metrics = _evaluate(store, champion.model_uri, test)
        promoted, reason = _decide(candidate, champion, settings)
        registered = False
        if not settings.dry_run:
            candidate.version, registered = _register(store, settings.model_name, candidate)
            if promoted and (champion is None or champion.version != candidate.version):
                registry.set_alias(store, settings.model_name, CHAMPION, candidate.version)
                if champion is not None:
                    registry.set_alias(store, settings.model_name, PREVIOUS, champion.version)
                if not locked and not settings.force:
                    _check_again(store, settings.model_name, candidate, test, metric)
    decision = Decision(candidate, champion, promoted, reason, registered, settings.dry_run)
    _report(decision, settings.model_name, metric)
    if not settings.dry_run:
        _publish(store, settings.model_name, metric, decision, exports, test)
    return decision


def _publish(store, name: str, metric: str, d: Decision, exports: list[Prepared], test) -> None:
    """The checked exports logged on the version's run, then its model card."""
    c, h = d.candidate, d.champion
    for prepared in exports:
        log.info(f"exported {record(store, prepared)}: {prepared.check.summary()}")
    model = store.load_keras(c.model_uri)
    gate = card.Gate(
        metric,
        d.promoted,
        d.reason,
        h.version if h else None,
        h.metrics if h else {},
    )
    text = card.build(
        store, name, c.version, c.run_id, model, test.y, probabilities(model, test.x), gate
    )
    registry.describe(store, name, c.version, text, c.run_id, card.CARD)
    log.info(f"model card: {card.CARD} on run {c.run_id}, and version {c.version}'s description")


def _decide(candidate: Contender, champion: Contender | None, settings) -> tuple[bool, str]:
    """Whether the candidate becomes champion, and why."""
    metric = settings.metric.value
    if champion is None:
        return True, "there is no champion yet"
    if champion.run_id == candidate.run_id:
        return True, "the candidate already is the champion"
    ours, theirs = candidate.metrics[metric], champion.metrics[metric]
    promoted = ours >= theirs + settings.margin
    relation = ">=" if promoted else "<"
    reason = (
        f"test {metric} {ours:.4f} {relation} {theirs:.4f} (champion) + margin {settings.margin:g}"
    )
    if not promoted and settings.force:
        return True, reason + "; moved anyway (promote.force=true)"
    return promoted, reason


RECHECK_PAUSE = 2.0  # seconds: longer than another promote's two alias writes take


def _check_again(store, name: str, candidate: Contender, test, metric: str) -> None:
    """On a tracking server, where no lock is held: after a pause, if another promote
    moved the champion since this one did, the better of the two on this candidate's
    test split is champion (the last to write re-checks too, and keeps its own)."""
    time.sleep(RECHECK_PAUSE)
    now = _champion(store, name)
    if now is None or now.version == candidate.version:
        return
    now.metrics = _evaluate(store, now.model_uri, test)
    ours, theirs = candidate.metrics[metric], now.metrics[metric]
    if ours > theirs:
        registry.set_alias(store, name, CHAMPION, candidate.version)
        registry.set_alias(store, name, PREVIOUS, now.version)
        log.warning(
            f"another promote made version {now.version} champion meanwhile (test {metric} "
            f"{theirs:.4f}); version {candidate.version} ({ours:.4f}) is champion again"
        )


def _candidate(store, cfg: PromoteConfig) -> tuple[Contender, Any]:
    settings = cfg.promote
    if settings.run_id:
        trial = store.run(settings.run_id, what="promote.run_id")
        tags = trial.data.tags
        if tags.get(names.ROLE) != names.ROLE_TRIAL or names.MODEL_URI not in tags:
            raise StoreError(f"run {settings.run_id} is not a happysad trial with a logged model")
        return _contender(trial), store.run(tags[names.PARENT_RUN_ID])
    experiment_id = store.experiment_id(cfg.mlflow.experiment)
    for sweep_run in store.find_sweeps(experiment_id, cfg.sweep.name):
        trials = store.finished_trials(sweep_run, limit=1)
        if trials and names.MODEL_URI in trials[0].data.tags:
            return _contender(trials[0]), sweep_run
        if cfg.sweep.name:
            break
    which = (
        f"sweep '{cfg.sweep.name}'" if cfg.sweep.name else f"experiment '{cfg.mlflow.experiment}'"
    )
    raise StoreError(f"{which} has no finished trial with a logged model: run a sweep first")


def _contender(run) -> Contender:
    tags = run.data.tags
    return Contender(
        run_id=run.info.run_id,
        trial_id=tags.get(names.TRIAL_ID, "?"),
        sweep=tags.get(names.SWEEP, "?"),
        model_uri=tags[names.MODEL_URI],
        data_digest=tags.get(names.DATA_DIGEST, "?"),
    )


def _ensemble_candidate(store, cfg: PromoteConfig) -> tuple[Contender, Any]:
    """promote.ensemble=K: the candidate is an ensemble of the sweep's trials, chosen on
    its validation split, evaluated once on its test split, logged unless a dry run."""
    experiment_id = store.experiment_id(cfg.mlflow.experiment)
    found = store.find_sweeps(experiment_id, cfg.sweep.name, limit=1)
    if not found:
        which = f"no sweep named '{cfg.sweep.name}'" if cfg.sweep.name else "no sweep yet"
        raise StoreError(f"{which} in experiment '{cfg.mlflow.experiment}': run a sweep first")
    sweep_run = found[0]
    from happysad.results import ensemble  # heavy (mlflow.keras): only for an ensemble

    images = sweep_images(store, sweep_run)
    text = store.read_text(sweep_run.info.run_id, "config/config.yaml")
    values = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    built = ensemble.choose(store, sweep_run, cfg.promote.ensemble, images)
    metrics = binary_metrics(images.test.y, probabilities(built.model, images.test.x))
    run_id, uri = "(not logged: dry run)", ""
    if not cfg.promote.dry_run:
        max_pixels = values["data"].get("max_pixels", 40_000_000)
        run_id, uri = ensemble.record(store, sweep_run, built, images, max_pixels)
    candidate = Contender(
        run_id=run_id,
        trial_id="ensemble",
        sweep=sweep_run.info.run_name,
        model_uri=uri,
        data_digest=sweep_run.data.tags.get(names.DATA_DIGEST, images.digest),
        metrics=metrics,
    )
    return candidate, images.test


def _test_split(store, sweep_run):
    """The candidate sweep's test split, rebuilt from its recorded config."""
    return sweep_images(store, sweep_run).test


def _evaluate(store, model_uri: str, test) -> dict[str, float]:

    model = store.load_keras(model_uri)
    return binary_metrics(test.y, probabilities(model, test.x))


def _champion(store, name: str) -> Contender | None:

    version = registry.version_by_alias(store, name, CHAMPION)
    if version is None:
        return None  # no registered model, or no champion yet
    tags = version.tags
    return Contender(
        run_id=tags.get(names.SOURCE_RUN_ID, version.run_id or "?"),
        trial_id=tags.get(names.TRIAL_ID, "?"),
        sweep=tags.get(names.SWEEP, "?"),
        model_uri=f"models:/{name}/{version.version}",
        data_digest=tags.get(names.DATA_DIGEST, "?"),
        version=str(version.version),
    )


def _register(store, name: str, candidate: Contender) -> tuple[str, bool]:
    """The candidate's version: the existing one if this run is registered already."""
    version = registry.version_of_run(store, name, candidate.run_id)
    if version is not None:
        return version, False
    tags = {
        names.SOURCE_RUN_ID: candidate.run_id,
        names.TRIAL_ID: candidate.trial_id,
        names.SWEEP: candidate.sweep,
        names.DATA_DIGEST: candidate.data_digest,
        **{names.TEST + k: f"{v:.6g}" for k, v in candidate.metrics.items()},
    }
    return registry.register(store, name, candidate.model_uri, tags), True


def _report(d: Decision, name: str, metric: str) -> None:
    c, h = d.candidate, d.champion
    version = c.version or "-"
    if d.registered:
        version += " (new)"
    elif c.version:
        version += " (registered before)"
    rows = [
        ("", "candidate", "champion"),
        ("trial", f"trial-{c.trial_id}", f"trial-{h.trial_id}" if h else "(none)"),
        ("run", c.run_id, h.run_id if h else "-"),
        ("sweep", c.sweep, h.sweep if h else "-"),
        ("version", version, h.version if h else "-"),
    ]
    for key in c.metrics:
        mark = " *" if key == metric else ""
        rows.append(
            (f"test {key}{mark}", f"{c.metrics[key]:.4f}", f"{h.metrics[key]:.4f}" if h else "-")
        )
    width = [max(len(str(r[i])) for r in rows) for i in range(3)]
    for r in rows:
        log.info("  ".join(str(v).ljust(width[i]) for i, v in enumerate(r)).rstrip())
    verdict = "promote" if d.promoted else "keep the champion"
    if d.dry_run:
        log.info(f"decision (dry run, nothing written): would {verdict}: {d.reason}")
    elif d.promoted:
        log.info(
            f"decision: promoted: {d.reason}. models:/{name}@{CHAMPION} is version {c.version}"
        )
    else:
        log.info(
            f"decision: kept the champion: {d.reason}. models:/{name}@{CHAMPION} is still "
            f"version {h.version if h else '-'}"
        )
    log.info(f"the champion: models:/{name}@{CHAMPION}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="promote")
def main(cfg: DictConfig) -> None:
    try:
        promote(OmegaConf.to_object(cfg))
    except HappysadError as err:
        log.error(f"error: {err}")
        sys.exit(2 if isinstance(err, ConfigError) else 1)


if __name__ == "__main__":
    main()
