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
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from happysad.config import Config, config_dir, describe, register_configs, searchable, to_typed  # noqa: E402
from happysad.errors import ConfigError, HappysadError, SweepFailed  # noqa: E402
from happysad.progress import duration, value  # noqa: E402

log = logging.getLogger("happysad")

register_configs()


@dataclass
class SweepResult:
    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    results: list[dict[str, Any]]
    best: dict[str, Any] | None
    test_metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: str | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["score"] is None]


def fresh_name() -> str:
    return f"sweep-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_sweep(cfg: DictConfig, overrides: Sequence[str] = ()) -> SweepResult:
    """Run one sweep as configured; raise a HappysadError the user can act on."""
    typed = to_typed(cfg)
    typed.sweep.name = typed.sweep.name or fresh_name()
    name = typed.sweep.name
    tuner_dir = Path(typed.sweep.dir) / name
    if tuner_dir.exists():
        raise ConfigError(
            f"a sweep named '{name}' already exists in {tuner_dir}: "
            "choose another sweep.name, or delete that folder to start it again"
        )

    # Heavy imports only now that the config is known to be good.
    from happysad import data as data_module
    from happysad import tracking

    started = time.monotonic()
    log.info(
        f"happysad sweep '{name}': tuner {typed.tuner.name.value}, "
        f"objective {typed.tuner.objective.value}"
    )
    images = data_module.load(typed.data)
    _log_data(images)
    uri = tracking.resolve_tracking_uri(typed.mlflow.tracking_uri)
    experiment_id = tracking.open_experiment(uri, typed.mlflow.experiment)
    log.info(f"MLflow store: {uri} (experiment '{typed.mlflow.experiment}')")

    sweep = tracking.SweepRun(experiment_id, name)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["sweep"]["name"] = name
    space = {key: describe(s) for key, s in searchable(typed).items()}
    sweep.start(
        config_yaml=OmegaConf.to_yaml(resolved),
        overrides=list(overrides),
        params=_sweep_params(typed),
        data_summary=images.summary(),
        skipped=images.skipped,
        search_space=space,
    )
    log.info("search space:")
    for key, text in space.items():
        log.info(f"  {key:<28} {text}")
    try:
        result = _search(typed, images, sweep, uri, experiment_id)
    except BaseException as err:
        status = tracking.KILLED if isinstance(err, KeyboardInterrupt) else tracking.FAILED
        sweep.end(status, reason=f"{type(err).__name__}: {err}")
        raise
    _log_summary(result, typed, time.monotonic() - started)
    if result.best is None or result.stopped_early:
        reasons = "; ".join(f"trial-{r['trial_id']}: {r['reason']}" for r in result.failed[:3])
        what = result.stopped_early or "every trial failed"
        raise SweepFailed(f"sweep '{name}': {what}. First reasons: {reasons}")
    return result


def _search(cfg: Config, images, sweep, uri: str, experiment_id: str) -> SweepResult:
    from happysad import tracking, tuning
    from happysad.hypermodel import FaceHyperModel

    hypermodel = FaceHyperModel(cfg, images.input_shape)
    tuner = tuning.make_tuner(
        cfg, hypermodel, cfg.sweep.dir, cfg.sweep.name, sweep=sweep, data=images
    )
    stopped = None
    try:
        tuner.search(images, verbose=0)
    except RuntimeError as err:
        # keras-tuner's stop after max_consecutive_failed_trials failures in a row.
        if "consecutive failures" not in str(err):
            raise
        stopped = f"stopped after {cfg.tuner.max_consecutive_failures} failed trials in a row"
    maximize = tuner.oracle.objective.direction == "max"
    best = tuning.best_by(tuner.results, maximize)
    result = SweepResult(
        name=cfg.sweep.name,
        tracking_uri=uri,
        experiment_id=experiment_id,
        parent_run_id=sweep.run_id,
        results=tuner.results,
        best=best,
        stopped_early=stopped,
    )
    figures, tables, metrics, params, tags = _sweep_outcome(cfg, images, tuner, result, maximize)
    sweep.finish(
        status=tracking.FINISHED if best and not stopped else tracking.FAILED,
        metrics=metrics,
        params=params,
        tags=tags,
        figures=figures,
        tables=tables,
    )
    return result


def _sweep_outcome(cfg: Config, images, tuner, result: SweepResult, maximize: bool):
    """What the parent run gets at the end: best trial, table, plots, test metrics."""
    from happysad import evaluation, plots
    from happysad.data import CLASS_NAMES

    objective = cfg.tuner.objective.value
    trials = result.results
    figures = {
        "plots/objective_per_trial.png": plots.objective_per_trial(
            [int(r["trial_id"]) for r in trials], [r["score"] for r in trials], objective, maximize
        )
    }
    tables = {"trials.csv": trials_csv(trials)}
    metrics: dict[str, float] = {
        "trials_finished": float(len(trials) - len(result.failed)),
        "trials_failed": float(len(result.failed)),
    }
    params: dict[str, Any] = {}
    tags: dict[str, str] = {}
    best = result.best
    if best is None:
        return figures, tables, metrics, params, tags
    metrics["best_objective"] = best["score"]
    tags["happysad.best_trial_id"] = best["trial_id"]
    tags["happysad.best_run_id"] = best["run_id"]
    params = {f"best.{k}": v for k, v in best["hyperparameters"].items()}
    if best["model_uri"]:
        tags["happysad.best_model_uri"] = best["model_uri"]
    if len(images.test):
        # The test split is looked at once, here, and never for choosing a model.
        prob = _best_model_probabilities(tuner, best, images)
        result.test_metrics = {
            f"test_{k}": v for k, v in evaluation.binary_metrics(images.test.y, prob).items()
        }
        metrics.update(result.test_metrics)
        fpr, tpr = evaluation.roc_curve(images.test.y, prob)
        figures["plots/test_confusion_matrix.png"] = plots.confusion_matrix(
            evaluation.confusion(images.test.y, prob),
            CLASS_NAMES,
            f"test, best model (trial-{best['trial_id']})",
        )
        figures["plots/test_roc.png"] = plots.roc(
            fpr,
            tpr,
            result.test_metrics["test_auc"],
            f"test ROC, best model (trial-{best['trial_id']})",
        )
    return figures, tables, metrics, params, tags


def _best_model_probabilities(tuner, best: dict[str, Any], images):
    """P(happy) on the test split from the best model: the one logged to MLflow when
    there is one (so the artifact itself is checked), else keras-tuner's checkpoint."""
    from happysad.tuning import predict

    if best["model_uri"]:
        import mlflow

        model = mlflow.keras.load_model(best["model_uri"])
    else:
        model = tuner.load_model(tuner.oracle.get_trial(best["trial_id"]))
    return predict(model, images.test.x)


def trials_csv(results: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(k for r in results for k in r["hyperparameters"]))
    header = ["trial_id", "status", "score", "seconds", "run_id", *names, "reason"]
    rows = [",".join(header)]
    for r in results:
        cells = [
            r["trial_id"],
            str(r["status"]),
            "" if r["score"] is None else f"{r['score']:.6g}",
            f"{r['seconds']:.1f}",
            r["run_id"] or "",
        ]
        cells += [str(r["hyperparameters"].get(n, "")) for n in names]
        cells.append((r["reason"] or "").replace(",", ";").replace("\n", " "))
        rows.append(",".join(cells))
    return "\n".join(rows) + "\n"


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
    }


def _log_data(images) -> None:
    from happysad.data import CLASS_NAMES

    s = images.summary()
    p = images.preprocessing
    log.info(
        f"data: {s['path']} ({p.image_size}x{p.image_size} {p.color_mode}, digest {s['digest']}"
        f"{', decoded earlier' if images.from_cache else ''}): train {s['train_images']} "
        f"(happy {s['train_happy']}, sad {s['train_sad']}), validation {s['val_images']}, "
        f"test {s['test_images']}"
    )
    if images.skipped:
        reasons = ", ".join(f"{n} {kind}" for kind, n in images.skipped_by_reason().most_common())
        log.warning(
            f"skipped {len(images.skipped)} files: {reasons} "
            "(each listed with its reason in the sweep's data/skipped_files.csv)"
        )
    dropped = images.duplicates.get("dropped_across_splits", 0)
    if dropped:
        log.warning(
            f"{dropped} exact duplicates that would sit on both sides of a split were kept on one side only"
        )
    if images.class_weight:
        weights = ", ".join(
            f"{CLASS_NAMES[c]} {w:.2f}" for c, w in sorted(images.class_weight.items())
        )
        log.info(f"class weights (data.class_weight=balanced): {weights}")


def _log_summary(result: SweepResult, cfg: Config, seconds: float) -> None:
    objective = cfg.tuner.objective.value
    finished = len(result.results) - len(result.failed)
    log.info("")
    log.info(
        f"sweep '{result.name}' done in {duration(seconds)}: {len(result.results)} trials, "
        f"{finished} finished, {len(result.failed)} failed"
    )
    best = result.best
    if best is not None:
        log.info(f"best: trial-{best['trial_id']} with {objective} {best['score']:.4f}")
        for key, v in best["hyperparameters"].items():
            log.info(f"  {key:<28} {value(v)}")
        if result.test_metrics:
            shown = "  ".join(
                f"{k.removeprefix('test_')} {v:.4f}" for k, v in result.test_metrics.items()
            )
            log.info(f"test split (never used for selection): {shown}")
    log.info(f"MLflow parent run: {result.parent_run_id} (experiment id {result.experiment_id})")
    runs_page = f"#/experiments/{result.experiment_id}/runs"
    if result.tracking_uri.startswith(("http://", "https://")):
        log.info(f"see the runs in the MLflow UI: {result.tracking_uri.rstrip('/')}/{runs_page}")
    else:
        log.info(
            f"open the MLflow UI on this store, then http://127.0.0.1:5000/{runs_page} "
            "(expand the sweep's row to see its trials):"
        )
        log.info(f"  {_beside_python('mlflow')} ui --backend-store-uri {result.tracking_uri}")
    if best is not None and best["model_uri"]:
        log.info("go on with the best model (load it, or register it in the model registry):")
        prefix = f"MLFLOW_TRACKING_URI={result.tracking_uri} {_beside_python('python')} -c"
        log.info(
            f"  {prefix} \"import mlflow; m = mlflow.keras.load_model('{best['model_uri']}'); m.summary()\""
        )
        log.info(
            f"  {prefix} \"import mlflow; mlflow.register_model('{best['model_uri']}', 'happysad')\""
        )


def _beside_python(program: str) -> str:
    """A program of this environment, as a path to type from here (.venv/bin/mlflow)."""
    path = Path(sys.executable).parent / program
    if not path.exists():
        return program
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_sweep(cfg, overrides=list(HydraConfig.get().overrides.task))
    except HappysadError as err:
        log.error(f"error: {err}")
        sys.exit(2 if isinstance(err, ConfigError) else 1)


if __name__ == "__main__":
    main()
