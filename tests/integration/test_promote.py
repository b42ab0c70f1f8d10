"""Promotion in the registry, prediction on files, and serving over HTTP, on real sweeps."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from happysad.config.composition import compose
from tests.conftest import free_port, wait_for_http
from tests.pictures import MUX, THREE, composite


@pytest.fixture
def store(finished_sweeps):
    """The session's finished sweeps, `good` (it learned) the champion of `happysad`,
    which the prediction and serving tests use; `bad` could not learn (learning rate 0)."""
    store = finished_sweeps.root, finished_sweeps.uri
    _promote(store, "sweep.name=good", "promote.force=true")
    return store


def _promote(store, *overrides):
    from happysad.promote import promote

    root, uri = store
    cfg = compose([f"mlflow.tracking_uri={uri}", *overrides], name="promote")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return promote(OmegaConf.to_object(cfg))
    finally:
        os.chdir(cwd)


def _aliases(uri, name="happysad"):
    model = MlflowClient(uri).get_registered_model(name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_promotion_is_gated_forced_dry_run_and_idempotent(store):
    """In a registered model of its own: the prediction tests use `happysad`'s champion."""
    root, uri = store
    gate = "promote.model_name=gated"
    first = _promote(store, gate, "sweep.name=good")
    assert first.promoted and first.registered and first.champion is None
    assert _aliases(uri, "gated") == {"champion": first.candidate.version}
    assert first.candidate.metrics["auc"] > 0.6

    worse = _promote(store, gate, "sweep.name=bad", "promote.metric=auc")
    assert not worse.promoted and worse.registered
    assert worse.candidate.metrics["auc"] < worse.champion.metrics["auc"]
    assert _aliases(uri, "gated") == {"champion": first.candidate.version}, (
        "a worse model does not take the alias"
    )

    dry = _promote(store, gate, "sweep.name=bad", "promote.force=true", "promote.dry_run=true")
    assert dry.promoted and dry.dry_run and not dry.registered
    assert _aliases(uri, "gated") == {"champion": first.candidate.version}, (
        "a dry run writes nothing"
    )

    forced = _promote(store, gate, "sweep.name=bad", "promote.metric=auc", "promote.force=true")
    assert forced.promoted and not forced.registered, "the same run is not registered twice"
    assert forced.candidate.version == worse.candidate.version
    assert _aliases(uri, "gated") == {
        "champion": worse.candidate.version,
        "previous": first.candidate.version,
    }
    versions = MlflowClient(uri).search_model_versions("name = 'gated'")
    assert len(versions) == 2
    tags = {str(v.version): v.tags for v in versions}[first.candidate.version]
    assert tags["happysad.sweep"] == "good" and float(tags["happysad.test_auc"]) > 0.6


def _faces(folder: Path, count: int = 3) -> list[Path]:
    from happysad.data.synthetic import SyntheticSpec, draw_face

    folder.mkdir(parents=True, exist_ok=True)
    spec = SyntheticSpec(num_images=count, image_size=64, seed=99, hard_fraction=0.0)
    paths = []
    for i in range(count):
        path = folder / f"face{i}.jpg"
        draw_face(spec, i)[1].save(path)
        paths.append(path)
    return paths


def _predict(store, *args):
    root, uri = store
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run(
        [sys.executable, "-m", "happysad.predict", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_predict_files_a_folder_and_a_glob_with_an_unreadable_file(store, tmp_path):
    faces = _faces(tmp_path / "photos")
    (tmp_path / "photos" / "broken.png").write_text("not an image")
    (tmp_path / "photos" / ".hidden.png").write_text("ignored")
    out_csv, out_json = tmp_path / "out.csv", tmp_path / "out.json"
    done = _predict(
        store,
        str(faces[0]),
        str(tmp_path / "photos"),
        str(tmp_path / "photos" / "face*.jpg"),
        str(tmp_path / "nothing-*.png"),
        "--output",
        str(out_csv),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 + 4 + 3 + 1
    # 64x64 pictures are face crops to a 48x48 model: classified whole, one line each.
    assert all(
        line.split()[1:4] == ["whole", "0,0", "64x64"] and line.split()[4] in ("happy", "sad")
        for line in lines
        if "error:" not in line
    )
    assert sum("broken.png  error: not an image Pillow can read" in line for line in lines) == 1
    assert "no file matches" in lines[-1]
    rows = out_csv.read_text().splitlines()
    assert rows[0] == "path,face,x,y,width,height,label,probability,error" and len(rows) == 10
    assert _predict(store, str(faces[1]), "--output", str(out_json)).returncode == 0
    (row,) = json.loads(out_json.read_text())
    assert row["label"] in ("happy", "sad") and 0 <= row["probability"] <= 1


def test_predict_fails_only_if_nothing_could_be_predicted(store, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    done = _predict(store, str(bad))
    assert done.returncode == 1 and "error: empty file" in done.stdout


def test_predict_without_a_champion_says_which_command_makes_one(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    MlflowClient(uri).search_experiments()  # an empty store
    done = subprocess.run(
        [sys.executable, "-m", "happysad.predict", "x.jpg"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert (
        "has the alias 'champion' yet" in done.stderr
        and "python -m happysad.promote" in done.stderr
    )
    done = subprocess.run(
        [sys.executable, "-m", "happysad.predict", "x.jpg"],
        cwd=tmp_path,
        env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/none/mlflow.db"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "no MLflow store at" in done.stderr


def _invoke(port: int, pictures: list[bytes], params: dict | None = None) -> list[dict]:
    """The server's rows for the pictures, parsed as strictly as JavaScript's JSON.parse
    would: NaN or Infinity in the answer fails the test."""
    encoded = [base64.b64encode(p).decode() for p in pictures]
    body = {"dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]}}
    if params:
        body["params"] = params
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    text = urllib.request.urlopen(request, timeout=120).read().decode()
    answer = json.loads(text, parse_constant=lambda word: pytest.fail(f"{word} in {text}"))
    return answer["predictions"]


def test_mlflow_serves_the_champion_over_http(store, tmp_path):
    root, uri = store
    port = free_port()
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [
            str(mlflow_cli),
            "models",
            "serve",
            "-m",
            "models:/happysad@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        # The server starts uvicorn from PATH: the environment's bin folder must be on it.
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server)
        faces = _faces(tmp_path / "photos", 2)
        pictures = [p.read_bytes() for p in faces]
        png = io.BytesIO()
        Image.new("RGB", (300, 200), (20, 40, 60)).save(png, format="PNG")  # no face in it
        pictures.append(png.getvalue())
        if MUX.is_dir():  # three real faces in one picture
            three = io.BytesIO()
            composite(THREE).save(three, format="PNG")
            pictures.append(three.getvalue())
        rows = _invoke(port, pictures)
        assert [(r["input"], r["face"]) for r in rows][:3] == [(0, None), (1, None), (2, None)]
        assert all(
            r["label"] in ("happy", "sad") and 0 <= r["probability"] <= 1 and r["error"] is None
            for r in rows[:2]
        )
        assert rows[2]["error"] == "no face found" and rows[2]["label"] is None
        if MUX.is_dir():
            assert [(r["input"], r["face"]) for r in rows[3:]] == [(3, 1), (3, 2), (3, 3)]
            assert all(r["label"] in ("happy", "sad") and r["width"] > 100 for r in rows[3:])
            largest = _invoke(port, pictures[3:], {"faces": "largest"})
            assert [(r["input"], r["face"]) for r in largest] == [(0, 1)]
            # The same face in a batch of one: equal up to float round-off (oneDNN).
            assert abs(largest[0]["probability"] - rows[3]["probability"]) < 1e-5
        # The server answers what predict answers for the same file.
        local = _predict(store, str(faces[0])).stdout.split()
        assert local[4] == rows[0]["label"] and abs(float(local[5]) - rows[0]["probability"]) < 1e-4
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_two_promotes_at_once_never_leave_the_worse_model_champion(store, monkeypatch):
    """Two promote processes at once, a good and a bad model: each reads the champion,
    decides and writes under the store's lock, so the second sees the first's champion.
    The test holds the lock itself until both wait for it (both have evaluated their
    candidate by then), then lets them race."""
    import fcntl

    from tests.conftest import start_command

    root, uri = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    lock = open(Path(uri.removeprefix("sqlite:///")).with_suffix(".db.promote.lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        racers = {
            sweep: start_command(
                [
                    sys.executable,
                    "-m",
                    "happysad.promote",
                    f"sweep.name={sweep}",
                    "promote.model_name=race",
                    "promote.metric=auc",
                ],
                root,
            )
            for sweep in ("bad", "good")
        }
        said = {}
        for sweep, process in racers.items():
            said[sweep] = []
            for line in process.stdout:
                said[sweep].append(line)
                if "waiting for another promote of this store to finish" in line:
                    break
            else:
                pytest.fail(f"promote of {sweep} never waited:\n{''.join(said[sweep][-30:])}")
        assert not MlflowClient(uri).search_registered_models("name = 'race'"), (
            "nothing is registered while another promote holds the lock"
        )
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    for sweep, process in racers.items():
        out = process.communicate(timeout=300)[0]
        assert process.returncode == 0, "".join(said[sweep]) + out
    versions = MlflowClient(uri).search_model_versions("name = 'race'")
    by_sweep = {v.tags["happysad.sweep"]: str(v.version) for v in versions}
    assert sorted(by_sweep) == ["bad", "good"] and len(versions) == 2
    assert _aliases(uri, "race")["champion"] == by_sweep["good"]


def test_an_ensemble_of_the_best_trials_is_one_model_that_averages_exactly(store, tmp_path):
    """promote.ensemble=K on `good` (three trials, one pruned): chosen on validation,
    logged on a child run of the sweep's run, a plain Keras model (safe mode) whose
    output is its members' weighted mean, served by the same python_function."""
    import keras
    import mlflow.artifacts
    import numpy as np
    import pandas as pd

    from happysad.errors import ConfigError
    from happysad.serving.pyfunc import probabilities
    from happysad.tracking.store import Store

    root, uri = store
    made = _promote(store, "sweep.name=good", "promote.ensemble=3", "promote.model_name=ens")
    assert made.promoted and made.registered and made.candidate.trial_id == "ensemble"
    assert made.candidate.metrics["auc"] > 0.6
    client = MlflowClient(uri)
    run = client.get_run(made.candidate.run_id)
    tags = run.data.tags
    sweep = None
    for s in client.search_runs([run.info.experiment_id], "tags.`happysad.role` = 'sweep'"):
        if s.info.run_name == "good":
            sweep = s
    assert tags["happysad.role"] == "ensemble" and run.info.status == "FINISHED"
    assert tags["mlflow.parentRunId"] == sweep.info.run_id
    members = json.loads(tags["happysad.ensemble_members"])
    assert 1 <= len(members) <= 3 and abs(sum(m["weight"] for m in members) - 1) < 1e-9
    finished = {t.info.run_id: t for t in Store(uri).finished_trials(sweep)}
    assert len(finished) == 3  # the ensemble's run is no trial of the sweep
    assert all(m["run_id"] in finished for m in members)
    # Exactly the weighted mean of its members, in a model Keras loads in safe mode.
    s = Store(uri)
    with s.scoped():
        local = mlflow.artifacts.download_artifacts(tags["happysad.model_uri"], dst_path=tmp_path)
    ensemble = keras.saving.load_model(Path(local) / "data" / "model.keras", safe_mode=True)
    x = np.random.default_rng(0).integers(0, 256, (16, *ensemble.input_shape[1:]), dtype="uint8")
    mean = sum(
        m["weight"]
        * probabilities(s.load_keras(finished[m["run_id"]].data.tags["happysad.model_uri"]), x)
        for m in members
    )
    assert np.abs(probabilities(ensemble, x) - mean).max() < 1e-5
    # The same images-in flavour serves it.
    faces = _faces(tmp_path / "photos", 1)
    rows = s.load_pyfunc(tags["happysad.model_uri"]).predict(
        pd.DataFrame({"image": [faces[0].read_bytes()]})
    )
    assert rows.iloc[0]["label"] in ("happy", "sad")
    # Bad input: one sentence, nothing recorded.
    before = len(client.search_runs([run.info.experiment_id]))
    with pytest.raises(ConfigError, match="promote.ensemble=0 must be at least 1"):
        _promote(store, "sweep.name=good", "promote.ensemble=0")
    assert len(client.search_runs([run.info.experiment_id])) == before
