"""The folder loader: stratified reproducible splits and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from happysad.config import ColorMode
from happysad.data import load_folder
from happysad.errors import DataError

SPLIT = {
    "image_size": 16,
    "color_mode": ColorMode.grayscale,
    "val_fraction": 0.2,
    "test_fraction": 0.2,
}


def _folder(root, happy=20, sad=10, size=(20, 24), mode="L"):
    for name, count in (("happy", happy), ("sad", sad)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            value = (i * 7 + (100 if name == "happy" else 0)) % 256
            Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(
                root / name / f"{i}.png"
            )
    return root


def test_splits_are_stratified_and_reproducible(tmp_path):
    folder = _folder(tmp_path / "faces")
    a = load_folder(folder, seed=1, **SPLIT)
    b = load_folder(folder, seed=1, **SPLIT)
    assert a.train.paths == b.train.paths
    assert {k: len(getattr(a, k)) for k in ("train", "val", "test")} == {
        "train": 18,
        "val": 6,
        "test": 6,
    }
    assert a.val.counts() == {"happy": 4, "sad": 2} and a.test.counts() == {"happy": 4, "sad": 2}
    assert a.train.x.shape == (18, 16, 16, 1) and a.train.x.dtype == np.uint8
    every = a.train.paths + a.val.paths + a.test.paths
    assert len(set(every)) == 30
    assert load_folder(folder, seed=2, **SPLIT).test.paths != a.test.paths


def test_rgb_mode_and_resizing(tmp_path):
    data = load_folder(
        _folder(tmp_path / "faces", mode="RGB"), seed=0, **{**SPLIT, "color_mode": ColorMode.rgb}
    )
    assert data.input_shape == (16, 16, 3) and data.train.x.shape[1:] == (16, 16, 3)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nowhere", seed=0, **SPLIT)


def test_missing_class_folder_names_what_was_found(tmp_path):
    (tmp_path / "happy").mkdir()
    (tmp_path / "neutral").mkdir()
    with pytest.raises(DataError, match=r"no 'sad/' folder \(found: happy, neutral\)"):
        load_folder(tmp_path, seed=0, **SPLIT)


def test_unreadable_files_are_skipped_and_reported(tmp_path):
    folder = _folder(tmp_path / "faces")
    (folder / "sad" / "notes.txt").write_text("not an image")
    (folder / "happy" / ".DS_Store").write_bytes(b"\0\1")
    data = load_folder(folder, seed=0, **SPLIT)
    assert [p.rsplit("/", 1)[-1] for p, _ in data.skipped] == ["notes.txt"]
    assert "not a readable image" in data.skipped[0][1]
    assert len(data.train) + len(data.val) + len(data.test) == 30


def test_too_few_images_to_split(tmp_path):
    folder = _folder(tmp_path / "faces", happy=20, sad=2)
    with pytest.raises(DataError, match="too few to split"):
        load_folder(folder, seed=0, **SPLIT)
