"""The MLflow package takes its store explicitly: what a sweep, a trial's process or a
worker on another machine writes lands in the store it was given, whatever MLflow's
global tracking URI says, and MLflow's global state is left as it was found. A URI's
credentials are never shown, and a fresh store is created whole or not at all."""

from __future__ import annotations

import os
from contextlib import contextmanager

import mlflow
import pytest

from happysad.errors import StoreError
from happysad.tracking import names
from happysad.tracking.store import Store, without_credentials


def test_a_missing_local_store_is_reported_and_never_created(tmp_path):
    db = tmp_path / "none" / "mlflow.db"
    with pytest.raises(StoreError, match="no MLflow store at"):
        Store.existing(f"sqlite:///{db}")
    assert not db.parent.exists()


def test_scoped_puts_back_the_global_uris_and_their_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/theirs.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    store = Store(f"sqlite:///{tmp_path}/ours.db")
    with store.scoped():
        assert mlflow.get_tracking_uri() == mlflow.get_registry_uri() == store.uri
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/theirs.db"
    assert "MLFLOW_REGISTRY_URI" not in os.environ


def test_runs_and_models_land_in_the_given_store_not_the_global_one(tmp_path, monkeypatch):
    """A sweep's runs and a trial's model, written while MLflow's global URI names
    another store: everything is in ours, nothing in the decoy."""
    import keras

    from happysad.serving.images import Preprocessing
    from happysad.tracking.models import log_model
    from happysad.tracking.runs import SweepRun

    decoy = f"sqlite:///{tmp_path / 'decoy' / 'mlflow.db'}"
    (tmp_path / "decoy").mkdir()
    # MLflow's global URI, as mlflow.set_tracking_uri sets it, put back after the test.
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", decoy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", decoy)
    store = Store(f"sqlite:///{tmp_path / 'ours' / 'mlflow.db'}")
    experiment_id = store.open_experiment("happysad")
    summary = {"path": str(tmp_path), "digest": "d1", "train_images": 2}
    sweep = SweepRun(store, experiment_id, "s1")
    sweep.start(
        config_yaml="a: 1\n",
        overrides=["a=1"],
        params={"tuner.objective": "val_accuracy"},
        data_summary=summary,
        skipped=[],
        search_space={"model.depth": "{2, 3}"},
    )
    trial_run = sweep.start_trial("00", {"model.depth": 2})
    sweep.log_epoch({"val_accuracy": 0.5}, 0)
    sweep.log_epoch({"val_accuracy": 0.75}, 1)
    model = keras.Sequential(
        [keras.Input((8, 8, 1), dtype="uint8"), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    prep = Preprocessing(image_size=8, color_mode="grayscale", faces="whole")
    settings = {"preprocessing": prep.to_dict(), "class_names": ["sad", "happy"]}
    # As a trial's process does: a Store of its own on the URI it was handed.
    model_uri = log_model(Store(store.uri), trial_run, model, settings, {})
    sweep.log_trial_result({"objective": 0.75}, {})
    sweep.end_trial(names.FINISHED)
    sweep.end(names.FINISHED)

    assert mlflow.get_tracking_uri() == decoy and mlflow.active_run() is None
    assert store.client.search_experiments(filter_string="name = 'happysad'")
    assert mlflow.MlflowClient(decoy).get_experiment_by_name("happysad") is None
    (parent,) = store.find_sweeps(experiment_id, "s1")
    assert parent.info.status == "FINISHED" and parent.data.tags[names.DATA_DIGEST] == "d1"
    assert parent.data.params["tuner.objective"] == "val_accuracy"
    (trial,) = store.finished_trials(parent)
    assert trial.info.run_id == trial_run and trial.data.tags[names.MODEL_URI] == model_uri
    # The model belongs to the run's experiment (MLflow would put it in its current one).
    logged = store.client.get_logged_model(model_uri.removeprefix("models:/"))
    assert logged.experiment_id == experiment_id and logged.source_run_id == trial_run
    assert trial.data.tags[names.PARENT_RUN_ID] == parent.info.run_id
    assert trial.data.tags["mlflow.user"]  # what MLflow's own start_run would add
    history = store.client.get_metric_history(trial_run, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.75)]
    assert store.read_text(parent.info.run_id, "config/config.yaml") == "a: 1\n"
    assert store.load_keras(model_uri).output_shape == (None, 1)
    assert mlflow.get_tracking_uri() == decoy


def _log_the_dataset_at_the_barrier(uri, experiment_id, barrier, results):
    from happysad.tracking.runs import create_run, image_dataset, log_dataset

    store = Store(uri)
    run_id = create_run(store, experiment_id, "job", {})
    dataset = image_dataset({"path": "/data/faces", "name": "faces", "digest": "d1"})
    barrier.wait()
    try:
        log_dataset(store, run_id, dataset)
        results.put("logged")
    except Exception as err:  # the parent asserts on it
        results.put(f"{type(err).__name__}: {err}"[:300])


def test_two_processes_logging_one_new_dataset_at_once_both_record_it(tmp_path):
    """A parallel multirun: two jobs' runs log the same new dataset into one experiment at
    the same moment. MLflow inserts it twice and breaks its unique key unless we retry
    (this broke the joblib multirun; without the retry it failed 6 times in 6 here)."""
    import multiprocessing

    store = Store(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = store.open_experiment("race")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    jobs = [
        context.Process(
            target=_log_the_dataset_at_the_barrier,
            args=(store.uri, experiment_id, barrier, results),
        )
        for _ in range(2)
    ]
    for job in jobs:
        job.start()
    outcomes = [results.get(timeout=120) for _ in jobs]
    for job in jobs:
        job.join(30)
    assert outcomes == ["logged", "logged"]
    runs = store.client.search_runs([experiment_id])
    assert [len(run.inputs.dataset_inputs) for run in runs] == [1, 1]


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("http://alice:s3cret@host:5000", "http://host:5000"),
        ("https://alice:p%40ss@host/mlflow/", "https://host/mlflow/"),
        ("http://alice:p@ss@host:5000/x", "http://host:5000/x"),  # an unencoded @
        ("http://token@host:5000", "http://host:5000"),  # a user only
        ("http://host:5000", "http://host:5000"),
        (
            "postgresql+psycopg://bob:pw@db.lan:5432/mlflow",
            "postgresql+psycopg://db.lan:5432/mlflow",
        ),
        ("postgresql://bob@db.lan/mlflow", "postgresql://db.lan/mlflow"),
        ("sqlite:////home/a@b/mlruns/mlflow.db", "sqlite:////home/a@b/mlruns/mlflow.db"),
        ("/data/me@work/mlruns", "/data/me@work/mlruns"),
        ("file:///data/me@work/mlruns", "file:///data/me@work/mlruns"),
        ("models:/happysad@champion", "models:/happysad@champion"),
        (
            "mlflow.tracking_uri=http://a:b@h:1 data.path=/x@y",
            "mlflow.tracking_uri=http://h:1 data.path=/x@y",
        ),
        ("mlflow:\n  tracking_uri: http://a:b@h:1\n", "mlflow:\n  tracking_uri: http://h:1\n"),
    ],
)
def test_a_uri_is_shown_without_its_user_information(given, shown):
    assert without_credentials(given) == shown


def test_a_servers_credentials_move_to_mlflows_variables(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    store = Store("http://alice:p%40ss@127.0.0.1:5000")
    assert store.uri == store.connect_uri == "http://127.0.0.1:5000"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"
    assert "p@ss" not in repr(store) and "p%40ss" not in repr(store)


def test_a_databases_credentials_stay_for_mlflow_only(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    store = Store("postgresql+psycopg2://bob:pw@127.0.0.1:5432/mlflow")
    assert store.connect_uri == "postgresql+psycopg2://bob:pw@127.0.0.1:5432/mlflow"
    assert store.uri == "postgresql+psycopg2://127.0.0.1:5432/mlflow"
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ


@contextmanager
def failing_migration(times: int, also=None, fail: bool = True):
    """A real failure half-way through MLflow's real schema migrations: SQLAlchemy's
    hook before each statement raises the driver's own error at the first statement of
    migration 75868b020152 (the one that failed here once), `times` times, on a store
    being created; `also` runs there first (a second creator finishing its store), and
    with `fail` false, the migration then goes on."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    seen = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if "CREATE TABLE sql_trace_metric_daily_rollups" not in statement:
            return
        if len(seen) >= times:
            return
        seen.append(str(conn.engine.url))
        if also is not None:
            also()
        if fail:
            raise sqlite3.OperationalError("disk I/O error")

    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", before)


def test_a_store_whose_creation_fails_twice_leaves_nothing_and_the_next_command_works(tmp_path):
    db = tmp_path / "mlruns" / "mlflow.db"
    with failing_migration(times=2) as failures, pytest.raises(StoreError) as failed:
        Store(f"sqlite:///{db}").open_experiment("happysad")
    assert len(failures) == 2 and all(u.endswith(".creating") for u in failures)
    message = str(failed.value)
    assert message.startswith(f"could not create the MLflow store {db} (OperationalError")
    assert "nothing was left behind: run the command again" in message
    assert sorted(p.name for p in db.parent.iterdir()) == []  # no store, no temporary file
    # The next command creates the store and works on it.
    store = Store(f"sqlite:///{db}")
    experiment = store.open_experiment("happysad")
    assert store.experiment_id("happysad") == experiment and db.is_file()


def test_a_creation_that_fails_once_is_tried_again(tmp_path, caplog):
    db = tmp_path / "mlflow.db"
    with failing_migration(times=1) as failures:
        experiment = Store(f"sqlite:///{db}").open_experiment("happysad")
    assert len(failures) == 1 and "trying once more" in caplog.text
    assert Store.existing(f"sqlite:///{db}").experiment_id("happysad") == experiment
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_a_store_another_process_created_meanwhile_is_kept(tmp_path):
    """Two creators at once: the one that finishes first makes the store; the other's
    own copy is dropped, never moved over it."""
    db = tmp_path / "mlflow.db"

    def theirs():  # the other creator, finishing while ours is half-way
        Store(f"sqlite:///{db}").open_experiment("theirs")

    with failing_migration(times=1, also=theirs, fail=False) as seen:
        ours = Store(f"sqlite:///{db}")
        ours.open_experiment("ours")
    assert len(seen) == 1
    names = {e.name for e in ours.client.search_experiments()}
    assert {"theirs", "ours"} <= names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]
