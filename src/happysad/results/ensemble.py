"""`promote.ensemble=K`: a candidate built from a sweep's best trials.

Every finished trial with a logged model (up to LIBRARY, best first) predicts the
sweep's validation split; greedy selection with replacement (model/ensemble.py)
chooses up to K of them; their weighted average is one Keras model, logged on its own
child run of the sweep's run (role `ensemble`) with its members' run ids and weights.
Promote then evaluates it once on the test split and puts it through the same gate
as a single model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from happysad.data.dataset import CLASS_NAMES
from happysad.errors import ConfigError
from happysad.model.ensemble import combine, log_loss, select
from happysad.results.evaluation import binary_metrics
from happysad.serving.pyfunc import probabilities
from happysad.tracking import names
from happysad.tracking.models import log_model
from happysad.tracking.names import FINISHED
from happysad.tracking.runs import create_run, log_metrics, log_params, set_tags

log = logging.getLogger("happysad")

LIBRARY = 30  # the best finished trials an ensemble may choose from


@dataclass
class Member:
    run_id: str
    trial_id: str
    weight: float


@dataclass
class Ensemble:
    model: Any
    members: list[Member]
    k: int
    val_metrics: dict[str, float] = field(default_factory=dict)


def choose(store: Any, sweep_run: Any, k: int, images: Any) -> Ensemble:
    """Up to `k` of the sweep's finished trials, by greedy selection on validation."""
    trials = [
        t for t in store.finished_trials(sweep_run, limit=LIBRARY) if names.MODEL_URI in t.data.tags
    ]
    if not trials:
        raise ConfigError(
            f"sweep '{sweep_run.info.run_name}' has no finished trial with a logged model: "
            "there is nothing to build an ensemble of; run the sweep first"
        )
    models = [store.load_keras(t.data.tags[names.MODEL_URI]) for t in trials]
    val = images.val
    predicted = [probabilities(m, val.x) for m in models]
    counts = select(predicted, val.y, k)
    members, chosen = [], []
    for trial, model, count in zip(trials, models, counts, strict=True):
        if count:
            tags = trial.data.tags
            members.append(Member(trial.info.run_id, tags.get(names.TRIAL_ID, "?"), count / k))
            chosen.append(model)
    ensemble = Ensemble(combine(chosen, [m.weight for m in members]), members, k)
    p = probabilities(ensemble.model, val.x)
    ensemble.val_metrics = {**binary_metrics(val.y, p), "log_loss": log_loss(val.y, p)}
    best_alone = log_loss(val.y, predicted[0])
    log.info(
        f"ensemble of {len(members)} trials, "
        + ", ".join(f"trial-{m.trial_id} x{m.weight:.2f}" for m in members)
        + f": validation log loss {ensemble.val_metrics['log_loss']:.4f} "
        f"(the best trial alone: {best_alone:.4f})"
    )
    return ensemble


def record(
    store: Any, sweep_run: Any, ensemble: Ensemble, images: Any, max_pixels: int
) -> tuple[str, str]:
    """The ensemble's own run under the sweep's run, with its model; (run id, model URI)."""
    sweep = sweep_run.info.run_name
    digest = sweep_run.data.tags.get(names.DATA_DIGEST, images.digest)
    members = [m.__dict__ for m in ensemble.members]
    run_id = create_run(
        store,
        sweep_run.info.experiment_id,
        f"ensemble-{ensemble.k}",
        {
            names.PARENT_RUN_ID: sweep_run.info.run_id,
            names.ROLE: names.ROLE_ENSEMBLE,
            names.SWEEP: sweep,
            names.TRIAL_ID: "ensemble",
            names.DATA_DIGEST: digest,
            names.ENSEMBLE_MEMBERS: json.dumps(members),
        },
    )
    log_params(
        store,
        run_id,
        {
            "ensemble.k": ensemble.k,
            "ensemble.members": len(members),
            **{f"ensemble.weight.{m.run_id}": f"{m.weight:.6g}" for m in ensemble.members},
        },
    )
    log_metrics(store, run_id, {f"val_{k}": v for k, v in ensemble.val_metrics.items()})
    settings = {
        "preprocessing": images.preprocessing.to_dict(),
        "class_names": list(CLASS_NAMES),
        "max_pixels": max_pixels,
    }
    metadata = {
        "preprocessing": images.preprocessing.to_dict(),
        "class_names": list(CLASS_NAMES),
        "positive_class": CLASS_NAMES[1],
        "input": "uint8 pixels 0-255, shape (n, size, size, channels); the model rescales them",
        "data_digest": digest,
        "sweep": sweep,
        "ensemble": members,
    }
    uri = log_model(store, run_id, ensemble.model, settings, metadata)
    set_tags(store, run_id, {names.NOTE: f"ensemble of {len(members)} trials of sweep '{sweep}'"})
    store.client.set_terminated(run_id, FINISHED)
    return run_id, uri
