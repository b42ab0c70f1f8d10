"""Sweeps that survive: resume, kills and Ctrl-C, failed trials, multirun, determinism."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from happysad.errors import ConfigError
from happysad.sweep import run_sweep
from tests.conftest import (
    by_status,
    compose_config,
    sweep_command,
    sweep_runs,
)


def test_the_same_command_continues_a_named_sweep_to_its_budget(tiny, store_uri):
    run_sweep(compose_config([*tiny, "sweep.name=grow"]))
    result = run_sweep(compose_config([*tiny, "sweep.name=grow", "tuner.max_trials=3"]))
    (parent,), children = sweep_runs(store_uri)
    assert parent.info.status == "FINISHED" and parent.data.tags["happysad.resumes"] == "1"
    assert by_status(children) == {"FINISHED": ["trial-0", "trial-1", "trial-2"]}
    assert len(result.results) == 3 and result.best is not None
    # Nothing left to do: running it again adds no trial.
    run_sweep(compose_config([*tiny, "sweep.name=grow", "tuner.max_trials=3"]))
    assert len(sweep_runs(store_uri)[1]) == 3


def test_a_changed_search_space_data_or_tuner_is_refused(tiny):
    run_sweep(compose_config([*tiny, "sweep.name=fixed", "tuner.max_trials=1"]))
    with pytest.raises(
        ConfigError, match=r"changed: search space: model\.depth \[2, 3\] -> \[2, 4\]"
    ):
        run_sweep(compose_config([*tiny, "sweep.name=fixed", "model.depth.max=4"]))
    with pytest.raises(ConfigError, match="data: data digest"):
        run_sweep(
            compose_config([*tiny, "sweep.name=fixed", "tuner.max_trials=1", "data.num_images=100"])
        )
    with pytest.raises(ConfigError, match="tuner: tuner.name random -> grid"):
        run_sweep(
            compose_config(
                [*tiny, "sweep.name=fixed", "tuner=grid", "tuner.max_trials=1", "tuner.epochs=1"]
            )
        )


def test_restart_starts_the_sweep_afresh(tiny, store_uri):
    run_sweep(compose_config([*tiny, "sweep.name=again", "tuner.max_trials=1"]))
    run_sweep(
        compose_config(
            [
                *tiny,
                "sweep.name=again",
                "tuner.max_trials=1",
                "model.depth.value=2",
                "sweep.restart=true",
            ]
        )
    )
    parents, children = sweep_runs(store_uri)
    assert len(parents) == 2 and len(children) == 2


def test_a_nan_trial_fails_with_its_reason_and_the_next_one_finishes(tiny, store_uri):
    cfg = compose_config(
        [
            *tiny,
            "tuner=grid",
            "tuner.max_trials=2",
            "tuner.epochs=1",
            "optimizer=sgd",
            "optimizer.learning_rate.choices=[1.0e+12,0.01]",
            "optimizer.momentum.value=0.0",
            "model.depth.value=2",
            "model.kernel_size.value=3",
            "model.filters=[{value:8},{value:8}]",
            "model.dense_units.value=8",
            "model.dropout.value=0.0",
            "data.batch_size.value=32",
        ]
    )
    result = run_sweep(cfg)
    _, children = sweep_runs(store_uri)
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 1 and len(children) == 2
    assert failed[0].data.params["optimizer.learning_rate"] == "1000000000000.0"
    assert "the loss became nan" in failed[0].data.tags["happysad.failure"]
    assert result.best.hyperparameters["optimizer.learning_rate"] == 0.01


def test_deterministic_sweeps_give_the_same_metrics(tmp_path, image_cache):
    # Op determinism is for the whole process, so each sweep runs in its own. Sweep b
    # trains in its own process too: a trial's process trains exactly what it would.
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    for name, isolate in (("a", "true"), ("b", "false")):
        cmd = sweep_command(
            image_cache,
            f"sweep.name={name}",
            "deterministic=true",
            "tuner.epochs=2",
            f"sweep.isolate_trials={isolate}",
        )
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(uri)
    _, children = sweep_runs(uri)
    history = {}
    for c in children:
        sweep = c.data.tags["happysad.sweep"]
        values = [m.value for m in client.get_metric_history(c.info.run_id, "val_loss")]
        history.setdefault(sweep, {})[c.info.run_name] = values
        assert (
            c.data.tags["happysad.deterministic"] == "True" and c.data.tags["happysad.seed"] == "42"
        )
    assert history["a"] == history["b"] and len(history["a"]) == 2


# --- the real command, killed and interrupted ---------------------------------------------


def test_an_all_failing_sweep_exits_non_zero_with_the_reasons(tmp_path, image_cache):
    done = subprocess.run(
        sweep_command(
            image_cache, "model.padding=valid", "model.depth.value=4", "model.kernel_size.value=5"
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1
    assert "every trial failed. First reasons: trial-0: model.depth=4" in done.stdout


@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], ids=["basic", "joblib"]
)
def test_a_multirun_gives_one_sweep_per_job_in_one_store(tmp_path, image_cache, launcher):
    # Same padding: every drawn architecture fits the tiny images, so each job's one
    # trial finishes whatever the seed draws.
    cmd = sweep_command(
        image_cache, "seed=0,1", "tuner.max_trials=1", "model.padding=same", *launcher
    )
    cmd.insert(3, "-m")  # python -m happysad.sweep -m ...
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parents, children = sweep_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert len(parents) == 2 and len(children) == 2
    assert len({p.data.tags["happysad.multirun"] for p in parents}) == 1
    assert sorted(p.data.tags["happysad.multirun_job"] for p in parents) == ["0", "1"]
    assert {c.data.tags[MLFLOW_PARENT_RUN_ID] for c in children} == {p.info.run_id for p in parents}


def test_the_preflight_catches_a_missing_data_folder_before_anything_heavy(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "happysad.sweep",
            "data=folder",
            f"data.path={tmp_path / 'none'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "error: data.path" in done.stdout
    assert "tensorflow" not in done.stderr.split(), (
        "TensorFlow was imported before the data was checked"
    )
