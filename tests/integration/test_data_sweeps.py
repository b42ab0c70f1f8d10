"""Sweeps on real folders: odd files skipped and listed, FER2013 photos."""

from __future__ import annotations

import pytest

from tests.conftest import FER
from tests.folders import fer_sample, odd_folder

needs_fer = pytest.mark.skipif(
    not FER.is_dir(), reason=f"the shared FER2013 sample is not at {FER}"
)


def test_a_sweep_runs_on_the_odd_folder_and_lists_what_it_skipped(tmp_path, store_uri):
    from happysad.sweep import run_sweep
    from tests.conftest import compose_config

    folder = odd_folder(tmp_path / "faces")
    cfg = compose_config(
        [
            "data=folder",
            f"data.path={folder}",
            "data.image_size=16",
            f"mlflow.tracking_uri={store_uri}",
            f"sweep.dir={tmp_path / 'sweeps'}",
            "tuner.max_trials=1",
            "tuner.epochs=1",
            "model.depth.value=1",
            f"data.cache_dir={tmp_path / 'cache'}",
        ]
    )
    result = run_sweep(cfg)
    from happysad.tracking.store import Store

    rows = Store(store_uri).read_text(result.parent_run_id, "data/skipped_files.csv").splitlines()
    assert rows[0] == "path,reason" and len(rows) == 8
    assert any("bomb.png" in r and "too large" in r for r in rows)


@needs_fer
def test_a_one_epoch_sweep_on_fer2013_photos(tmp_path, store_uri):
    from happysad.sweep import run_sweep
    from tests.conftest import compose_config

    root = fer_sample(tmp_path / "fer")
    cfg = compose_config(
        [
            "data=fer2013",
            f"data.path={root}",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"mlflow.tracking_uri={store_uri}",
            f"sweep.dir={tmp_path / 'sweeps'}",
            "tuner.max_trials=1",
            "tuner.epochs=1",
        ]
    )
    result = run_sweep(cfg)
    assert result.best is not None and "test_accuracy" in result.test_metrics
