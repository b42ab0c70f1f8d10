"""The commands as a user types them: help and errors at once, without TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_help_answers_without_importing_tensorflow():
    code = (
        "import sys, happysad.sweep; "
        "print('tensorflow' in sys.modules, 'mlflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
    helped = subprocess.run(
        [sys.executable, "-m", "happysad.sweep", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.returncode == 0, helped.stderr
    assert "tuner: bayesian, grid, hyperband, random\n" in helped.stdout
    assert "experiment: fer2013, fer2013_cnn, fer2013_long, quick, seed_baseline\n" in helped.stdout
    assert "schema" not in helped.stdout.split("== Config")[1].split("==")[0]


COMMANDS = ["sweep", "worker", "pretrain", "promote", "predict", "compare", "ui", "export"]
HEAVY = ["tensorflow", "keras", "keras_tuner", "mlflow", "cv2", "mtcnn", "ray"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_help_without_its_heavy_packages(command):
    """Importing a command loads none of TensorFlow, keras-tuner, MLflow, OpenCV, MTCNN
    or Ray: they load once a command has checked what it was asked."""
    code = f"import sys, happysad.{command}; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    helped = subprocess.run(
        [sys.executable, "-m", f"happysad.{command}", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.returncode == 0, helped.stderr
    assert f"happysad.{command}" in helped.stdout


@pytest.mark.parametrize(
    ("command", "arguments", "key"),
    [
        ("promote", ['promote.model_name="it\'s"'], "promote.model_name"),
        ("promote", ["promote.model_name='say \"cheese\"'"], "promote.model_name"),
        ("promote", ["promote.model_name=faces/v2"], "promote.model_name"),
        ("promote", ['sweep.name="o\'brien"'], "sweep.name"),
        ("pretrain", ["data.path=.", 'pretrain.model_name="it\'s"'], "pretrain.model_name"),
        ("compare", ["it's"], "SWEEP"),
    ],
)
def test_a_name_mlflow_cannot_search_for_is_one_sentence_and_exit_2(
    command, arguments, key, tmp_path
):
    """A quote in a sweep's or a model's name once gave an MLflow traceback (and, in
    promote.model_name, a new version at every promote): now one sentence naming the
    setting, exit 2, and nothing written, not even the store."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-m", f"happysad.{command}", *arguments],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = done.stdout + done.stderr  # Hydra's commands log to stdout
    errors = [line for line in said.splitlines() if "error: " in line]
    assert done.returncode == 2, said[-2000:]
    assert len(errors) == 1 and f"{key}=" in errors[0], said[-2000:]
    assert "Traceback" not in said
    assert not (tmp_path / "mlruns").exists()
