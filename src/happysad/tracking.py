"""Everything that talks to MLflow.

A sweep is one parent run; each keras-tuner trial is a nested child run named
`trial-<id>`. Runs are opened and closed where the sweep and its trials begin and
end, so every run ends FINISHED, FAILED or KILLED with the reason on it.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from happysad.errors import StoreError

DEFAULT_STORE = "mlruns"
TAG = "happysad."  # prefix of the tags this project sets
PACKAGES = ("happysad", "tensorflow", "keras", "keras-tuner", "mlflow", "hydra-core", "numpy")


def resolve_tracking_uri(configured: str | None) -> str:
    """The configured URI, else a SQLite store in ./mlruns (made absolute)."""
    if configured:
        return configured
    return f"sqlite:///{(Path.cwd() / DEFAULT_STORE / 'mlflow.db').resolve()}"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def open_experiment(uri: str, name: str) -> str:
    """Create the store and the experiment if needed, in this process, before any
    training (a fresh SQLite store migrated by several processes at once fails);
    make them the current ones; return the experiment id."""
    db = _sqlite_path(uri)
    artifact_location = None
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        # Artifacts beside the database: mlruns/mlflow.db and mlruns/artifacts/.
        artifact_location = (db.parent / "artifacts").resolve().as_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            # The kind makes the MLflow UI open the experiment on its training runs
            # rather than on the GenAI overview.
            return client.create_experiment(
                name,
                artifact_location=artifact_location,
                tags={"mlflow.experimentKind": "custom_model_development"},
            )
    except mlflow.exceptions.MlflowException as err:
        raise StoreError(f"cannot open the MLflow store {uri}: {err.message}") from err
    if experiment.lifecycle_stage == "deleted":
        raise StoreError(
            f"the MLflow experiment '{name}' is deleted in {uri}: restore it with "
            f"`mlflow experiments restore --experiment-id {experiment.experiment_id}`, "
            "or choose another mlflow.experiment"
        )
    return experiment.experiment_id


def environment_tags() -> dict[str, str]:
    """Git commit and package versions, as tags of the parent and of each trial."""
    tags = {}
    for package in PACKAGES:
        try:
            tags[f"{TAG}version.{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    tags[f"{TAG}version.python"] = sys.version.split()[0]
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def git_commit() -> str | None:
    """The commit of the happysad checkout, with '-dirty' if it has local changes."""

    def git(*args: str) -> str:
        here = Path(__file__).resolve().parent
        done = subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


class SweepRun:
    """The parent run of one sweep and the child run of the trial in progress."""

    def __init__(self, experiment_id: str, sweep_name: str):
        self.experiment_id = experiment_id
        self.sweep_name = sweep_name
        self.run_id: str | None = None
        self.trial_run_id: str | None = None
        self._env_tags = environment_tags()

    # --- the sweep ---------------------------------------------------------------

    def start(
        self,
        *,
        config_yaml: str,
        overrides: list[str],
        params: dict[str, Any],
        data_summary: dict[str, Any],
        skipped: list[tuple[str, str]],
        search_space: dict[str, str],
    ) -> str:
        run = mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=self.sweep_name,
            tags={
                **self._env_tags,
                f"{TAG}role": "sweep",
                f"{TAG}sweep": self.sweep_name,
                f"{TAG}overrides": " ".join(overrides) or "(none)",
                f"{TAG}data_digest": data_summary["digest"],
            },
        )
        self.run_id = run.info.run_id
        mlflow.log_params({**params, **{f"data.{k}": v for k, v in data_summary.items()}})
        self._dataset = image_dataset(data_summary)
        mlflow.log_input(self._dataset, context="training")
        self._data_digest = data_summary["digest"]
        mlflow.log_text(config_yaml, "config/config.yaml")
        mlflow.log_text("\n".join(overrides) + "\n", "config/overrides.txt")
        mlflow.log_dict(data_summary, "data/summary.json")
        mlflow.log_text(_csv([("path", "reason"), *skipped]), "data/skipped_files.csv")
        mlflow.log_dict(search_space, "config/search_space.json")
        return self.run_id

    def finish(
        self,
        *,
        status: str,
        metrics: dict[str, float],
        params: dict[str, Any],
        tags: dict[str, str],
        figures: dict[str, Any],
        tables: dict[str, str],
    ) -> None:
        # The trials are over, so the sweep's run is the active one again.
        mlflow.log_metrics(metrics)
        mlflow.log_params(params)
        mlflow.set_tags(tags)
        for path, fig in figures.items():
            mlflow.log_figure(fig, path)
        for path, text in tables.items():
            mlflow.log_text(text, path)
        self.end(status)

    def end(self, status: str, reason: str | None = None) -> None:
        """End the trial in progress (if any) and the sweep, e.g. after an error."""
        if self.trial_run_id is not None:
            self.end_trial(status, reason=reason)
        if self.run_id is not None and mlflow.active_run() is not None:
            if reason:
                mlflow.set_tag(MLFLOW_RUN_NOTE, reason)
            mlflow.end_run(status)
        self.run_id = None

    # --- a trial -----------------------------------------------------------------

    def start_trial(self, trial_id: str, hyperparameters: dict[str, Any]) -> str:
        run = mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=f"trial-{trial_id}",
            nested=True,
            tags={
                **self._env_tags,
                f"{TAG}role": "trial",
                f"{TAG}sweep": self.sweep_name,
                f"{TAG}trial_id": trial_id,
                f"{TAG}data_digest": self._data_digest,
            },
        )
        self.trial_run_id = run.info.run_id
        mlflow.log_params(hyperparameters)
        mlflow.log_input(self._dataset, context="training")
        return self.trial_run_id

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        # Synchronous on purpose: MLflow's asynchronous logging costs about a second
        # per run when the run ends, far more than one write per epoch.
        mlflow.log_metrics(metrics, step=epoch)

    def log_trial_result(self, metrics: dict[str, float], figures: dict[str, Any]) -> None:
        mlflow.log_metrics(metrics)
        for path, fig in figures.items():
            mlflow.log_figure(fig, path)

    def log_model(self, model: Any, input_shape: tuple[int, ...], metadata: dict[str, Any]) -> str:
        """The trained Keras model with a signature and pinned requirements; its URI."""
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype("float32"), (-1, *input_shape), "image")]),
            outputs=Schema([TensorSpec(np.dtype("float32"), (-1, 1), "happy")]),
        )
        info = mlflow.keras.log_model(
            model,
            name="model",
            signature=signature,
            # Explicit: inferring them starts a subprocess that costs seconds per model.
            pip_requirements=model_requirements(),
            metadata={"happysad": metadata},
        )
        return info.model_uri

    def end_trial(self, status: str, reason: str | None = None, details: str | None = None) -> None:
        if reason:
            mlflow.set_tag(f"{TAG}failure", reason[:4000])
            mlflow.set_tag(MLFLOW_RUN_NOTE, reason)
        if details:
            mlflow.log_text(details, "failure.txt")
        mlflow.end_run(status)
        self.trial_run_id = None


def image_dataset(summary: dict[str, Any]):
    """The data a sweep trained on, as an MLflow dataset: its source path, the digest of
    its decoded pixels and labels, and the counts per split and class as its profile.
    Two runs with the same digest saw the same images."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    class ImageDataset(MetaDataset):
        @property
        def profile(self) -> dict[str, Any]:
            return {
                k: v
                for k, v in summary.items()
                if k.endswith(("_images", "_happy", "_sad", "_files"))
            }

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    path = Path(summary["path"])
    with warnings.catch_warnings():  # the local source resolves two ways, both the same
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(path.as_uri())
    return ImageDataset(source=source, name=path.stem, digest=summary["digest"])


def _csv(rows: list[tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def model_requirements() -> list[str]:
    return [f"{p}=={importlib.metadata.version(p)}" for p in ("tensorflow", "keras", "numpy")]


FINISHED = RunStatus.to_string(RunStatus.FINISHED)
FAILED = RunStatus.to_string(RunStatus.FAILED)
KILLED = RunStatus.to_string(RunStatus.KILLED)


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}"
