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
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from happysad.config import Objective
from happysad.errors import StoreError
from happysad.images import Preprocessing
from happysad.trials import TrialRecord

# MLflow announces at INFO that it creates a new store's tables; a first sweep's
# console should show happysad's lines only (failures still come as errors).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

DEFAULT_STORE = "mlruns"
TAG = "happysad."  # prefix of the tags this project sets
PACKAGES = ("happysad", "tensorflow", "keras", "keras-tuner", "mlflow", "hydra-core", "numpy")


def resolve_tracking_uri(configured: str | None) -> str:
    """The store every command uses, by one rule: the URI given on its command line
    (`mlflow.tracking_uri=` for sweep and promote, `--tracking-uri` for predict, compare
    and ui), else MLFLOW_TRACKING_URI, else a SQLite store in ./mlruns (made absolute)."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path.cwd() / DEFAULT_STORE / 'mlflow.db').resolve()}"


def add_store_option(parser: Any) -> None:
    """The `--tracking-uri` option of the argparse commands (predict, compare, ui)."""
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="the MLflow store (default: MLFLOW_TRACKING_URI, else ./mlruns)",
    )


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def local_artifact_root(uri: str) -> Path | None:
    """Where a local SQLite store keeps artifacts: beside its database
    (mlruns/mlflow.db and mlruns/artifacts/); None for a server."""
    db = _sqlite_path(uri)
    return None if db is None else (db.parent / "artifacts").resolve()


def check_reachable(uri: str) -> None:
    """For commands that read a store: it must exist (SQLite) or answer (a server)."""
    db = _sqlite_path(uri)
    if db is not None:
        if not db.is_file():
            raise StoreError(
                f"no MLflow store at {db}: run a sweep here first (make sweep), or give the "
                "store that has the runs (--tracking-uri, mlflow.tracking_uri= or MLFLOW_TRACKING_URI)"
            )
        return
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as err:
            raise StoreError(
                f"the MLflow tracking server {uri} does not answer ({type(err).__name__}): start it, "
                "or give a running one (--tracking-uri, mlflow.tracking_uri= or MLFLOW_TRACKING_URI)"
            ) from err


def open_experiment(uri: str, name: str) -> str:
    """Create the store and the experiment if needed, in this process, before any
    training (a fresh SQLite store migrated by several processes at once fails);
    make them the current ones; return the experiment id."""
    db = _sqlite_path(uri)
    artifact_location = None
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = local_artifact_root(uri).as_uri()
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

    def __init__(
        self, uri: str, experiment_id: str, sweep_name: str, startup_log: Path | None = None
    ):
        self.uri = uri  # the store, handed on to the trials' processes explicitly
        self.experiment_id = experiment_id
        self.sweep_name = sweep_name
        # TensorFlow's start-up messages (startup.py), recorded when the sweep ends.
        self.startup_log = startup_log
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
        tags: dict[str, str] | None = None,
    ) -> str:
        run = mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=self.sweep_name,
            tags={
                **self._env_tags,
                **(tags or {}),
                f"{TAG}role": "sweep",
                f"{TAG}sweep": self.sweep_name,
                f"{TAG}overrides": " ".join(overrides) or "(none)",
                f"{TAG}data_digest": data_summary["digest"],
            },
        )
        self.run_id = run.info.run_id
        mlflow.log_params({**params, **{f"data.{k}": v for k, v in data_summary.items()}})
        self._use_data(data_summary)
        mlflow.log_input(self._dataset, context="training")
        mlflow.log_text(config_yaml, "config/config.yaml")
        mlflow.log_text("\n".join(overrides) + "\n", "config/overrides.txt")
        mlflow.log_dict(data_summary, "data/summary.json")
        mlflow.log_text(_csv([("path", "reason"), *skipped]), "data/skipped_files.csv")
        mlflow.log_dict(search_space, "config/search_space.json")
        return self.run_id

    def resume(
        self, run_id: str, *, config_yaml: str, overrides: list[str], data_summary: dict[str, Any]
    ) -> int:
        """Reopen the parent run of an interrupted or finished sweep; returns how many
        times it has been continued, this time included."""
        run = mlflow.start_run(run_id=run_id)
        self.run_id = run_id
        self._use_data(data_summary)
        resumed = int(run.data.tags.get(f"{TAG}resumes", "0")) + 1
        mlflow.set_tags(
            {f"{TAG}resumes": str(resumed), f"{TAG}overrides": " ".join(overrides) or "(none)"}
        )
        mlflow.log_text(config_yaml, f"config/config.resume-{resumed}.yaml")
        return resumed

    def _use_data(self, data_summary: dict[str, Any]) -> None:
        self._dataset = image_dataset(data_summary)
        self._data_digest = data_summary["digest"]

    def close_interrupted_trials(self) -> list[str]:
        """Trial runs a hard kill left RUNNING: marked KILLED, never left running. Their
        trials run again as new runs. Returns their trial ids."""
        client = MlflowClient()
        stale = client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.run_id}' and attributes.status = 'RUNNING'",
        )
        for run in stale:
            reason = "interrupted: the sweep stopped during this trial, which ran again when it was continued"
            client.set_tag(run.info.run_id, f"{TAG}failure", reason)
            client.set_tag(run.info.run_id, MLFLOW_RUN_NOTE, reason)
            client.set_terminated(run.info.run_id, KILLED)
        return [r.data.tags.get(f"{TAG}trial_id", "?") for r in stale]

    def previous_trials(self) -> list[TrialRecord]:
        """The finished and failed trials of this sweep so far, oldest first, in the form
        the tuner records new ones."""
        client = MlflowClient()
        runs = client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.run_id}' and attributes.status != 'KILLED'",
            order_by=["attributes.start_time ASC"],
            max_results=10000,
        )
        out = []
        for run in runs:
            tags, finished = run.data.tags, run.info.status == FINISHED
            out.append(
                TrialRecord(
                    trial_id=tags.get(f"{TAG}trial_id", "?"),
                    run_id=run.info.run_id,
                    status=run.info.status,
                    score=run.data.metrics.get("objective") if finished else None,
                    seconds=((run.info.end_time or run.info.start_time) - run.info.start_time)
                    / 1000,
                    hyperparameters=dict(run.data.params),
                    reason=tags.get(f"{TAG}failure"),
                    model_uri=tags.get(f"{TAG}model_uri"),
                )
            )
        return out

    def finish(self, *, status: str, outcome: Any) -> None:
        """Log a report.Outcome on the sweep's run and end it."""
        # The trials are over, so the sweep's run is the active one again.
        mlflow.log_metrics(outcome.metrics)
        mlflow.set_tags(outcome.tags)
        with tempfile.TemporaryDirectory(prefix="happysad-report-") as tmp:
            for path, content in {**outcome.images, **outcome.texts}.items():
                target = Path(tmp) / path
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    target.write_bytes(content)
                else:
                    target.write_text(content)
            mlflow.log_artifacts(tmp)
        self.end(status)

    def end(self, status: str, reason: str | None = None) -> None:
        """End the trial in progress (if any) and the sweep, e.g. after an error."""
        if self.trial_run_id is not None:
            self.end_trial(status, reason=reason)
        if self.run_id is not None and mlflow.active_run() is not None:
            if reason:
                mlflow.set_tag(MLFLOW_RUN_NOTE, reason)
            if self.startup_log is not None and self.startup_log.is_file():
                mlflow.log_artifact(str(self.startup_log), "logs")
            mlflow.end_run(status)
        self.run_id = None

    # --- a trial -----------------------------------------------------------------

    def start_trial(
        self, trial_id: str, hyperparameters: dict[str, Any], tags: dict[str, str] | None = None
    ) -> str:
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
                **(tags or {}),
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

    def log_trial_file(self, path: str, folder: str) -> None:
        """A file of the trial in progress, into `folder` of its run, when it has
        anything in it."""
        if os.path.exists(path) and os.path.getsize(path) > 0:
            mlflow.log_artifact(path, folder)

    def end_trial(self, status: str, reason: str | None = None, details: str | None = None) -> None:
        if reason:
            mlflow.set_tag(f"{TAG}failure", reason[:4000])
            mlflow.set_tag(MLFLOW_RUN_NOTE, reason)
        if details:
            mlflow.log_text(details, "failure.txt")
        mlflow.end_run(status)
        self.trial_run_id = None


def log_model(model: Any, settings: dict[str, Any], metadata: dict[str, Any]) -> str:
    """The trained model, on the active run, with its preprocessing and pinned
    requirements; its URI."""
    from happysad import model_format

    info = model_format.log_model(
        model,
        settings=settings,
        metadata={"happysad": metadata},
        # Explicit: inferring them starts a subprocess that costs seconds per model.
        pip_requirements=model_requirements(settings),
    )
    mlflow.set_tag(f"{TAG}model_uri", info.model_uri)
    return info.model_uri


def attach(uri: str, run_id: str) -> None:
    """Make `run_id` the active run of this process (in a trial's own process), never
    to be ended here: its status stays the sweep's to set."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        return
    mlflow.set_tracking_uri(uri)
    mlflow.start_run(run_id=run_id)


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
    return ImageDataset(
        source=source, name=summary.get("name") or path.stem, digest=summary["digest"]
    )


def _csv(rows: list[tuple[str, ...]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def find_sweeps(
    client: MlflowClient, experiment_id: str, name: str | None = None, limit: int = 50
) -> list:
    """The sweeps' parent runs, newest first; with `name`, the runs of that sweep."""
    wanted = f" and tags.`{TAG}sweep` = '{name}'" if name else ""
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG}role` = 'sweep'{wanted}",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )


def finished_trials(client: MlflowClient, sweep_run: Any, limit: int = 1000) -> list:
    """A sweep's FINISHED trial runs, best first by its own objective."""
    objective = sweep_run.data.params.get("tuner.objective", "val_accuracy")
    order = "ASC" if Objective(objective).direction == "min" else "DESC"
    return client.search_runs(
        [sweep_run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{sweep_run.info.run_id}' and attributes.status = 'FINISHED'",
        order_by=[f"metrics.objective {order}"],
        max_results=limit,
    )


# What each face detector needs where the model is loaded (the mtcnn package brings its
# weights inside its wheel, and needs lz4 and joblib to read them).
DETECTOR_PACKAGES = {"mtcnn": ["mtcnn", "lz4", "joblib"], "haar": ["opencv-python-headless"]}


def model_requirements(settings: dict[str, Any]) -> list[str]:
    """What loading and serving the model needs, pinned to this environment's versions."""
    packages = ["tensorflow", "keras", "numpy", "pillow", "pandas"]
    prep = Preprocessing.from_dict(settings["preprocessing"])
    if prep.finds_faces:
        packages += DETECTOR_PACKAGES[prep.face_detector]
    return [f"{p}=={importlib.metadata.version(p)}" for p in packages]


FINISHED = RunStatus.to_string(RunStatus.FINISHED)
FAILED = RunStatus.to_string(RunStatus.FAILED)
KILLED = RunStatus.to_string(RunStatus.KILLED)
