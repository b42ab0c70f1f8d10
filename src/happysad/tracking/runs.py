"""A sweep's runs: one parent run per sweep, one nested child run `trial-<id>` per
keras-tuner trial.

Every write names its run and goes through the sweep's `Store`: nothing relies on
MLflow's active run, so a trial's run can be written from the sweep's process, the
trial's own process or another machine alike. Runs are opened and closed where the
sweep and its trials begin and end, so every run ends FINISHED, FAILED or KILLED
with the reason on it. MLflow is imported where it is first used, as in store.py.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from happysad.errors import StoreError
from happysad.tracking import names
from happysad.tracking.store import Store, without_credentials
from happysad.trials import TrialRecord

PACKAGES = ("happysad", "tensorflow", "keras", "keras-tuner", "mlflow", "hydra-core", "numpy")


def environment_tags() -> dict[str, str]:
    """Git commit and package versions, as tags of the parent and of each trial."""
    tags = {}
    for package in PACKAGES:
        try:
            tags[names.VERSION + package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    tags[names.VERSION + "python"] = sys.version.split()[0]
    commit = git_commit()
    if commit:
        tags[names.GIT_COMMIT] = commit
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
        self, store: Store, experiment_id: str, sweep_name: str, startup_log: Path | None = None
    ):
        self.store = store  # handed on to the trials' processes
        self.experiment_id = experiment_id
        self.sweep_name = sweep_name
        # TensorFlow's start-up messages (search/startup.py), recorded when the sweep ends.
        self.startup_log = startup_log
        self.run_id: str | None = None
        self.trial_run_id: str | None = None
        self._finished_histories: dict[tuple[str, str], list[float]] = {}
        self._env_tags = environment_tags()

    @property
    def client(self):
        return self.store.client

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
        self.run_id = create_run(
            self.store,
            self.experiment_id,
            self.sweep_name,
            {
                **self._env_tags,
                **(tags or {}),
                names.ROLE: names.ROLE_SWEEP,
                names.SWEEP: self.sweep_name,
                names.OVERRIDES: " ".join(overrides) or "(none)",
                names.DATA_DIGEST: data_summary["digest"],
            },
        )
        log_params(
            self.store, self.run_id, {**params, **{f"data.{k}": v for k, v in data_summary.items()}}
        )
        self._use_data(data_summary)
        log_dataset(self.store, self.run_id, self._dataset)
        self.client.log_text(self.run_id, config_yaml, "config/config.yaml")
        self.client.log_text(self.run_id, "\n".join(overrides) + "\n", "config/overrides.txt")
        self.client.log_dict(self.run_id, data_summary, "data/summary.json")
        self.client.log_text(
            self.run_id, _csv([("path", "reason"), *skipped]), "data/skipped_files.csv"
        )
        self.client.log_dict(self.run_id, search_space, "config/search_space.json")
        return self.run_id

    def resume(
        self, run_id: str, *, config_yaml: str, overrides: list[str], data_summary: dict[str, Any]
    ) -> int:
        """Reopen the parent run of an interrupted or finished sweep; returns how many
        times it has been continued, this time included."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as err:
            raise StoreError(
                f"its MLflow run {run_id} is not in {self.store.uri} ({err.message})"
            ) from err
        self.client.update_run(run_id, status=names.RUNNING)
        self.run_id = run_id
        self._use_data(data_summary)
        resumed = int(run.data.tags.get(names.RESUMES, "0")) + 1
        set_tags(
            self.store,
            run_id,
            {names.RESUMES: str(resumed), names.OVERRIDES: " ".join(overrides) or "(none)"},
        )
        self.client.log_text(run_id, config_yaml, f"config/config.resume-{resumed}.yaml")
        return resumed

    def join(self, run_id: str, data_summary: dict[str, Any]) -> None:
        """Record trials under the running sweep `run_id`, as a distributed sweep's
        worker does; the sweep's run itself is the chief's."""
        self.run_id = run_id
        self._use_data(data_summary)

    def close_interrupted_trials(
        self,
        worker: str | None = None,
        reason: str = "interrupted: the sweep stopped during this trial, which ran again "
        "when it was continued",
    ) -> list[str]:
        """Trial runs a hard kill left RUNNING (of one worker, if given): marked KILLED,
        never left running. Their trials run again as new runs. Returns their trial ids."""
        where = f"attributes.status = '{names.RUNNING}'"
        if worker is not None:
            where += f" and tags.`{names.WORKER}` = '{worker}'"
        stale = self.store.children(self.run_id, self.experiment_id, where)
        for run in stale:
            set_tags(self.store, run.info.run_id, {names.FAILURE: reason, names.NOTE: reason})
            self.client.set_terminated(run.info.run_id, names.KILLED)
        return [r.data.tags.get(names.TRIAL_ID, "?") for r in stale]

    def previous_trials(self) -> list[TrialRecord]:
        """The finished and failed trials of this sweep so far, oldest first, in the form
        the tuner records new ones."""
        runs = self.store.children(
            self.run_id, self.experiment_id, f"attributes.status != '{names.KILLED}'"
        )
        out = []
        for run in runs:
            tags, finished = run.data.tags, run.info.status == names.FINISHED
            out.append(
                TrialRecord(
                    trial_id=tags.get(names.TRIAL_ID, "?"),
                    run_id=run.info.run_id,
                    status=run.info.status,
                    score=run.data.metrics.get("objective") if finished else None,
                    seconds=((run.info.end_time or run.info.start_time) - run.info.start_time)
                    / 1000,
                    started=run.info.start_time / 1000,
                    hyperparameters=dict(run.data.params),
                    reason=tags.get(names.FAILURE),
                    model_uri=tags.get(names.MODEL_URI),
                    pruned=tags.get(names.PRUNED) if finished else None,
                )
            )
        return out

    def trial_histories(self, metric: str) -> dict[str, list[float]]:
        """`metric` per epoch of this sweep's other trials (FINISHED, or RUNNING on a
        worker), by run id, as recorded so far: what pruning compares a trial with. A
        finished trial's history is read once."""
        runs = [
            r
            for r in self.store.children(self.run_id, self.experiment_id)
            if r.info.status in (names.FINISHED, names.RUNNING)
        ]
        cache = self._finished_histories
        out = {}
        for run in runs:
            run_id = run.info.run_id
            if run_id == self.trial_run_id or run.data.tags.get(names.ROLE) != names.ROLE_TRIAL:
                continue
            if (run_id, metric) not in cache:
                by_step = {m.step: m.value for m in self.client.get_metric_history(run_id, metric)}
                history = [by_step[step] for step in sorted(by_step)]
                if run.info.status != names.FINISHED:
                    out[run_id] = history
                    continue
                cache[run_id, metric] = history
            out[run_id] = cache[run_id, metric]
        return out

    def finish(self, *, status: str, outcome: Any) -> None:
        """Log a report.Outcome on the sweep's run and end it."""
        log_metrics(self.store, self.run_id, outcome.metrics)
        set_tags(self.store, self.run_id, outcome.tags)
        with tempfile.TemporaryDirectory(prefix="happysad-report-") as tmp:
            for path, content in {**outcome.images, **outcome.texts}.items():
                target = Path(tmp) / path
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    target.write_bytes(content)
                else:
                    target.write_text(content)
            self.client.log_artifacts(self.run_id, tmp)
        self.end(status)

    def end(self, status: str, reason: str | None = None) -> None:
        """End the trial in progress (if any) and the sweep, e.g. after an error."""
        if self.trial_run_id is not None:
            self.end_trial(status, reason=reason)
        if self.run_id is None:
            return
        if reason:
            set_tags(self.store, self.run_id, {names.NOTE: without_credentials(reason)})
        if self.startup_log is not None and self.startup_log.is_file():
            self.client.log_artifact(self.run_id, str(self.startup_log), "logs")
        self.client.set_terminated(self.run_id, status)
        self.run_id = None

    # --- a trial -----------------------------------------------------------------

    def start_trial(
        self, trial_id: str, hyperparameters: dict[str, Any], tags: dict[str, str] | None = None
    ) -> str:
        self.trial_run_id = create_run(
            self.store,
            self.experiment_id,
            f"trial-{trial_id}",
            {
                **self._env_tags,
                names.PARENT_RUN_ID: self.run_id,
                names.ROLE: names.ROLE_TRIAL,
                names.SWEEP: self.sweep_name,
                names.TRIAL_ID: trial_id,
                names.DATA_DIGEST: self._data_digest,
                **(tags or {}),
            },
        )
        log_params(self.store, self.trial_run_id, hyperparameters)
        log_dataset(self.store, self.trial_run_id, self._dataset)
        return self.trial_run_id

    def log_epoch(self, metrics: dict[str, float], epoch: int) -> None:
        # Synchronous on purpose: MLflow's asynchronous logging costs about a second
        # per run when the run ends, far more than one write per epoch.
        log_metrics(self.store, self.trial_run_id, metrics, step=epoch)

    def log_trial_result(self, metrics: dict[str, float], figures: dict[str, Any]) -> None:
        log_metrics(self.store, self.trial_run_id, metrics)
        for path, fig in figures.items():
            self.client.log_figure(self.trial_run_id, fig, path)

    def log_trial_file(self, path: str, folder: str) -> None:
        """A file of the trial in progress, into `folder` of its run, when it has
        anything in it."""
        file = Path(path)
        if file.is_file() and file.stat().st_size > 0:
            self.client.log_artifact(self.trial_run_id, path, folder)

    def tag_trial(self, tags: dict[str, str]) -> None:
        set_tags(self.store, self.trial_run_id, tags)

    def tag_sweep(self, tags: dict[str, str]) -> None:
        set_tags(self.store, self.run_id, tags)

    def end_trial(self, status: str, reason: str | None = None, details: str | None = None) -> None:
        # An error's text may quote a store's URI: recorded without its credentials.
        reason = reason and without_credentials(reason)
        details = details and without_credentials(details)
        if reason:
            set_tags(
                self.store, self.trial_run_id, {names.FAILURE: reason[:4000], names.NOTE: reason}
            )
        if details:
            self.client.log_text(self.trial_run_id, details, "failure.txt")
        self.client.set_terminated(self.trial_run_id, status)
        self.trial_run_id = None

    # --- writing -------------------------------------------------------------------

    def _use_data(self, data_summary: dict[str, Any]) -> None:
        self._dataset = image_dataset(data_summary)
        self._data_digest = data_summary["digest"]


# --- writing one run, by its id ----------------------------------------------------


def create_run(store: Store, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    from mlflow.tracking.context.registry import resolve_tags

    # resolve_tags adds what MLflow's own start_run would (user, source).
    run = store.client.create_run(experiment_id, tags=resolve_tags(tags), run_name=run_name)
    return run.info.run_id


def log_dataset(store: Store, run_id: str, dataset: Any) -> None:
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    entity = DatasetInput(
        dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")]
    )
    try:
        store.client.log_inputs(run_id, datasets=[entity])
    except MlflowException as err:
        # MLflow looks the dataset up, then inserts it: two runs of one experiment that
        # log the same new dataset at once (a parallel multirun) both insert, and the
        # second breaks the unique key. Once the first has committed, linking finds it.
        if "unique" not in str(err).lower():
            raise
        store.client.log_inputs(run_id, datasets=[entity])


def log_params(store: Store, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    store.client.log_batch(
        run_id, params=[Param(k, str(v)) for k, v in params.items()], synchronous=True
    )


def log_metrics(store: Store, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    store.client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
        synchronous=True,
    )


def set_tags(store: Store, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    store.client.log_batch(
        run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True
    )


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
