"""End to end: real sweeps on tiny synthetic data, checked in the MLflow store itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from happysad.errors import DataError, SweepFailed
from happysad.sweep import run_sweep
from tests.conftest import compose_config


def _runs(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("happysad")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    children = [r for r in runs if MLFLOW_PARENT_RUN_ID in r.data.tags]
    return client, parents, children


def _artifacts(client, run_id, path=""):
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def test_a_tiny_sweep_records_every_trial(tiny, store_uri, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    global_uri = mlflow.get_tracking_uri()
    result = run_sweep(
        compose_config([*tiny, "tuner.epochs=2", "sweep.name=tiny-1"]), ["tuner.epochs=2"]
    )
    # The sweep wrote through its own store: MLflow's global URI and active run are
    # as they were, so nothing it records leaned on them.
    assert mlflow.get_tracking_uri() == global_uri != store_uri
    assert mlflow.active_run() is None and "MLFLOW_TRACKING_URI" not in os.environ
    mlflow.set_tracking_uri(store_uri)  # as a user in a notebook would, to load the model
    client, parents, children = _runs(store_uri)

    (parent,) = parents
    assert parent.info.run_name == "tiny-1" and parent.info.status == "FINISHED"
    assert parent.info.run_id == result.parent_run_id
    assert parent.data.tags["happysad.overrides"] == "tuner.epochs=2"
    assert parent.data.tags["happysad.version.keras-tuner"] == "1.4.8"
    assert parent.data.params["data.train_images"] == "84"
    assert {"best_objective", "test_accuracy", "test_auc", "test_precision", "test_recall"} <= (
        parent.data.metrics.keys()
    )
    assert parent.data.tags["happysad.best_run_id"] in {c.info.run_id for c in children}
    assert {
        "config/config.yaml",
        "config/overrides.txt",
        "trials.csv",
        "data/summary.json",
        "plots/objective_per_trial.png",
        "plots/test_confusion_matrix.png",
        "plots/test_roc.png",
        "plots/test_precision_recall.png",
        "plots/parallel_coordinates.png",
        "plots/hyperparameter_importance.png",
        "sweep_report.html",
        "best_trial.json",
    } <= set(_artifacts(client, parent.info.run_id))
    page = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/sweep_report.html")
    assert "<h1>Sweep tiny-1</h1>" in page and page.count("data:image/png;base64,") == 6
    assert "trial-0" in page and "trial-1" in page and '<img src="http' not in page
    # Lineage: the sweep and each trial name the same data set, by the digest of its pixels.
    digest = parent.data.tags["happysad.data_digest"]
    (dataset,) = parent.inputs.dataset_inputs
    assert dataset.dataset.digest == digest and '"train_images": 84' in dataset.dataset.profile
    assert all(c.data.tags["happysad.data_digest"] == digest for c in children)
    assert all(c.inputs.dataset_inputs[0].dataset.digest == digest for c in children)
    config_text = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/config/config.yaml")
    assert "name: tiny-1" in config_text and "epochs: 2" in config_text

    assert len(children) == 2
    assert sorted(c.info.run_name for c in children) == ["trial-0", "trial-1"]
    for child in children:
        assert child.data.tags[MLFLOW_PARENT_RUN_ID] == parent.info.run_id
        assert child.info.status == "FINISHED"
        params = child.data.params
        assert {
            "model.depth",
            "model.filters.0",
            "model.kernel_size",
            "optimizer.learning_rate",
            "data.batch_size",
        } <= params.keys()
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [0, 1]
        for name in ("loss", "accuracy", "auc", "val_loss", "val_auc", "epoch_time"):
            assert len(client.get_metric_history(child.info.run_id, name)) == 2
        assert "objective" in child.data.metrics
        assert {
            "plots/learning_curves.png",
            "plots/val_confusion_matrix.png",
            "plots/val_roc.png",
            "plots/val_precision_recall.png",
            "plots/val_most_wrong.png",
        } <= set(_artifacts(client, child.info.run_id))

    best = result.best
    model = mlflow.keras.load_model(best.model_uri)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 1)).astype("float32")
    prob = model.predict(images, verbose=0)
    assert prob.shape == (3, 1) and np.all((prob >= 0) & (prob <= 1))
    pyfunc = mlflow.pyfunc.load_model(best.model_uri)
    assert pyfunc.metadata.metadata["happysad"]["preprocessing"]["image_size"] == 32
    # The python_function flavour takes image files, of any size, as they are on disk.
    import io

    import pandas as pd
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (70, 50), (90, 120, 30)).save(png, format="PNG")
    images = pd.DataFrame({"image": [png.getvalue(), b"not an image"]})
    # The synthetic faces are face crops: a larger picture is searched for faces first.
    answer = pyfunc.predict(images)
    assert answer.loc[0, "error"] == "no face found" and answer.loc[0, "label"] is None
    answer = pyfunc.predict(images, params={"no_face": "whole"})
    assert answer.loc[0, "label"] in ("happy", "sad") and 0 <= answer.loc[0, "probability"] <= 1
    assert (answer.loc[0, "width"], answer.loc[0, "height"]) == (70, 50)
    assert answer.loc[1, "error"] == "not an image Pillow can read"


def test_failed_trials_are_recorded_and_an_all_failed_sweep_raises(tiny, store_uri):
    cfg = compose_config(
        [*tiny, "model.padding=valid", "model.depth.value=4", "model.kernel_size.value=5"]
    )
    with pytest.raises(SweepFailed, match="every trial failed.*shrinks 32x32 images to nothing"):
        run_sweep(cfg)
    client, (parent,), children = _runs(store_uri)
    assert parent.info.status == "FAILED"
    assert len(children) == 2 and {c.info.status for c in children} == {"FAILED"}
    assert "shrinks 32x32 images" in children[0].data.tags["happysad.failure"]
    assert "failure.txt" in _artifacts(client, children[0].info.run_id)


def test_a_missing_data_folder_is_a_clear_error(tiny, tmp_path):
    overrides = [o for o in tiny if not o.startswith(("data.num_images", "data.cache_dir"))]
    with pytest.raises(DataError, match="does not exist"):
        run_sweep(compose_config([*overrides, "data=folder", f"data.path={tmp_path / 'none'}"]))


def test_the_command_runs_a_sweep_with_overrides(tmp_path, image_cache):
    command = [
        sys.executable,
        "-m",
        "happysad.sweep",
        "debug=tiny",
        "data.num_images=120",
        f"data.cache_dir={image_cache}",
        "tuner=hyperband",
        "tuner.epochs=2",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "trial 1 of 2" in done.stdout
    # The closing summary names the next happysad commands, with this sweep's store.
    store = f"MLFLOW_TRACKING_URI=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'} "
    python = Path(sys.executable).parent / "python"
    for step in ("ui", "compare sweep-", "promote sweep.name=sweep-", "predict photo.jpg"):
        assert f"{store}{python} -m happysad.{step}" in done.stdout, step
    # The default store is mlruns/ in the current folder.
    client, parents, children = _runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert len(parents) == 1 and len(children) == 2  # hyperband, 2 epochs at most: 2 trials
    assert all("tuner/epochs" in c.data.params for c in children)
    # The console shows happysad's lines and one about the devices; TensorFlow's C++
    # start-up lines and MLflow's store creation are kept off it ...
    console = done.stdout + done.stderr
    for noise in ("absl::InitializeLog", "cudart_stub", "cuInit", "Creating initial MLflow"):
        assert noise not in console, noise
    assert (
        sum(line.startswith(("no GPU found", "training on")) for line in console.splitlines()) == 1
    )
    # ... in the sweep's log, recorded on its run.
    assert "logs/startup.log" in _artifacts(client, parents[0].info.run_id)


def test_the_command_reports_bad_input_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "happysad.sweep", "data=folder", f"data.path={tmp_path / 'none'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "error: data.path" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_test_time_flip_is_in_the_logged_model_and_its_report(tiny, store_uri):
    """model.test_time_flip=true: the model a trial logs (what the test split, promote,
    predict and serving use) predicts the same for a face and its mirror image."""
    from happysad.data.dataset import load
    from happysad.serving.pyfunc import probabilities
    from happysad.tracking.store import Store

    cfg = compose_config([*tiny, "tuner.max_trials=1", "model.test_time_flip=true"])
    result = run_sweep(cfg)
    model = Store(store_uri).load_keras(result.best.model_uri)
    assert model.get_layer("test_time_flip") is not None
    x = load(result_data_config(cfg)).test.x
    np.testing.assert_allclose(
        probabilities(model, x), probabilities(model, x[:, :, ::-1, :].copy()), atol=1e-5
    )
    assert "test_accuracy" in result.test_metrics


def result_data_config(cfg):
    from happysad.config.composition import to_typed

    return to_typed(cfg).data


def test_asha_prunes_a_trial_that_cannot_learn_in_the_sweeps_own_process(
    tiny, store_uri, image_cache
):
    # Grid order: two learning rates that learn, then 0, which cannot: at the rung of
    # epoch 4 it ranks last of three, and only the top third goes on. Trained in the
    # sweep's process (the trial-process path is the finished sweeps' `good`, median).
    result = run_sweep(
        compose_config(
            [
                *tiny[2:],  # the store and the folders, not debug=tiny: this network learns
                "experiment=seed_baseline",
                "data.num_images=1200",
                "model.depth.value=2",
                "model.filters=[{value:32},{value:64}]",
                "tuner.epochs=6",
                "tuner=grid",
                "tuner.max_trials=3",
                "optimizer.learning_rate.value=null",
                "optimizer.learning_rate.choices=[0.002,0.0015,0.0]",
                "tuner.pruning=asha",
                "tuner.pruning_warmup=4",
                "sweep.isolate_trials=false",
            ]
        )
    )
    client, (parent,), children = _runs(store_uri)
    runs = {c.info.run_name: c for c in children}
    assert {c.info.status for c in children} == {"FINISHED"} and len(runs) == 3
    assert runs["trial-2"].data.params["optimizer.learning_rate"] == "0.0"
    tag = runs["trial-2"].data.tags["happysad.pruned"]
    assert tag.startswith("epoch 4, rule asha (eta 3)") and "ranks 3 of 3 trials" in tag
    assert not any("happysad.pruned" in runs[t].data.tags for t in ("trial-0", "trial-1"))
    history = client.get_metric_history(runs["trial-2"].info.run_id, "val_accuracy")
    assert len(history) == 4  # of its 6 epochs
    # keras-tuner scored it with its best epoch so far; the report counts it apart.
    (pruned,) = [r for r in result.results if r.pruned]
    assert pruned.trial_id == "2" and pruned.score == max(m.value for m in history)
    assert parent.data.metrics["trials_pruned"] == 1
    assert result.best.trial_id != "2"
