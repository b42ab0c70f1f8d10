"""Loading real folders: odd files, given and drawn splits, duplicates, FER2013, the cache."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from happysad.config.schema import (
    ColorMode,
    Fer2013DataConfig,
    FolderDataConfig,
    PublicTest,
    Resize,
)
from happysad.data.dataset import load, load_folder
from happysad.errors import DataError
from tests.conftest import FER
from tests.folders import class_folders, fer_sample, noise, odd_folder

SPLIT = {"image_size": 16, "val_fraction": 0.2, "test_fraction": 0.2}
needs_fer = pytest.mark.skipif(
    not FER.is_dir(), reason=f"the shared FER2013 sample is not at {FER}"
)


def test_splits_are_stratified_and_reproducible(tmp_path):
    folder = class_folders(tmp_path / "faces")
    a = load_folder(folder, seed=1, **SPLIT)
    b = load_folder(folder, seed=1, **SPLIT)
    assert a.train.paths == b.train.paths and a.digest == b.digest
    assert {k: len(getattr(a, k)) for k in ("train", "val", "test")} == {
        "train": 18,
        "val": 6,
        "test": 6,
    }
    assert a.val.counts() == {"happy": 4, "sad": 2} and a.test.counts() == {"happy": 4, "sad": 2}
    assert a.train.x.shape == (18, 16, 16, 1) and a.train.x.dtype == np.uint8
    assert len(set(a.train.paths + a.val.paths + a.test.paths)) == 30
    assert load_folder(folder, seed=2, **SPLIT).test.paths != a.test.paths


def test_link_loops_and_fifos_in_a_class_folder_neither_hang_nor_repeat(tmp_path):
    folder = class_folders(tmp_path / "faces")
    (folder / "happy" / "again").symlink_to(".")
    more = tmp_path / "more-sad"
    more.mkdir()
    for i in range(5):
        noise(2000 + i).save(more / f"{i}.png")
    (folder / "sad" / "more").symlink_to(more)
    os.mkfifo(folder / "sad" / "pipe.png")
    data = load_folder(folder, seed=1, **SPLIT)
    paths = data.train.paths + data.val.paths + data.test.paths
    assert len(paths) == 30 + 5, "each picture once, the linked folder's too"
    assert not any("again" in p for p in paths)


def test_given_train_and_test_folders_are_kept_and_validation_comes_from_train(tmp_path):
    class_folders(tmp_path / "faces" / "train", happy=20, sad=10)
    class_folders(tmp_path / "faces" / "test", happy=0, sad=0)
    for name, offset in (("happy", 5000), ("sad", 6000)):
        for i in range(3):
            noise(offset + i).save(tmp_path / "faces" / "test" / name / f"t{i}.png")
    data = load_folder(tmp_path / "faces", seed=0, **SPLIT)
    assert all("/test/" in p for p in data.test.paths) and len(data.test) == 6
    assert all("/train/" in p for p in data.train.paths + data.val.paths)
    assert len(data.val) == 6 and len(data.train) == 24


def test_class_folder_names_are_configurable(tmp_path):
    folder = class_folders(tmp_path / "faces")
    (folder / "happy").rename(folder / "smile")
    (folder / "sad").rename(folder / "frown")
    data = load_folder(folder, seed=0, happy_folder="smile", sad_folder="frown", **SPLIT)
    assert data.train.counts()["happy"] == 12


def test_rgb_mode(tmp_path):
    data = load_folder(
        class_folders(tmp_path / "faces", mode="RGB"), seed=0, color_mode=ColorMode.rgb, **SPLIT
    )
    assert data.input_shape == (16, 16, 3) and data.train.x.shape[1:] == (16, 16, 3)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nowhere", seed=0, **SPLIT)


def test_missing_class_folder_names_what_was_found(tmp_path):
    (tmp_path / "happy").mkdir()
    (tmp_path / "neutral").mkdir()
    (tmp_path / ".git").mkdir()
    with pytest.raises(DataError, match=r"no 'sad/' folder \(found: happy, neutral\)"):
        load_folder(tmp_path, seed=0, **SPLIT)


def test_a_class_without_a_usable_image_says_why(tmp_path):
    folder = class_folders(tmp_path / "faces", sad=0)
    (folder / "sad" / "a.jpg").write_text("not a picture")
    (folder / "sad" / "b.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"no usable sad image \(2 files: 1 .*, 1 .*\)"):
        load_folder(folder, seed=0, **SPLIT)


def test_too_few_images_to_split(tmp_path):
    with pytest.raises(DataError, match="too few to split"):
        load_folder(class_folders(tmp_path / "faces", happy=20, sad=2), seed=0, **SPLIT)


# --- every kind of odd file -----------------------------------------------------------


def test_every_kind_of_odd_file_is_handled_and_reported(tmp_path):
    data = load_folder(
        odd_folder(tmp_path / "faces"),
        seed=0,
        image_size=16,
        resize=Resize.stretch,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    reasons = {Path(path).name: reason for path, reason in data.skipped}
    assert reasons["notes.jpg"] == "not an image Pillow can read"
    assert reasons["truncated.jpg"].startswith("truncated or corrupt")
    assert reasons["empty.png"] == "empty file"
    assert reasons["bomb.png"].startswith("too large: declares over")
    assert (
        reasons["large.png"]
        == "too large: declares 9000x9000 pixels, above data.max_pixels=40000000"
    )
    assert reasons["mislabelled.png"].startswith("duplicate with conflicting labels")
    assert reasons["mislabelled-too.png"].startswith("duplicate with conflicting labels")
    assert len(reasons) == 7, "hidden files and folders are ignored, not skipped"
    assert data.duplicates["conflicting_labels"] == 2

    every = dict(
        zip(
            data.train.paths + data.val.paths + data.test.paths,
            np.concatenate([data.train.x, data.val.x, data.test.x]),
            strict=True,
        )
    )
    by_name = {Path(p).name: x for p, x in every.items()}
    assert {
        "rgba.png",
        "palette.png",
        "sixteen.png",
        "cmyk.jpg",
        "moving.gif",
        "photo.webp",
        "scan.tiff",
        "old.bmp",
        "rotated.jpg",
    } <= by_name.keys()
    assert 90 < by_name["sixteen.png"].mean() < 165, "16-bit scaled to 8 bits, not clipped white"
    rgba = by_name["rgba.png"].astype(float)
    assert rgba.mean() > 128, "transparency composited on white"
    rotated = by_name["rotated.jpg"][..., 0].astype(float)
    assert rotated[:6].mean() < 60 and rotated[-6:].mean() > 190, "EXIF orientation applied"


def test_duplicates_across_given_splits_stay_in_test_only(tmp_path):
    root = tmp_path / "faces"
    class_folders(root / "train", happy=12, sad=12)
    class_folders(root / "test", happy=0, sad=0)
    for name, offset in (("happy", 7000), ("sad", 8000)):
        for i in range(3):
            noise(offset + i).save(root / "test" / name / f"t{i}.png")
    shutil.copy(root / "train" / "happy" / "0.png", root / "test" / "happy" / "copy-of-train-0.png")
    data = load_folder(root, seed=0, **SPLIT)
    assert data.duplicates["dropped_across_splits"] == 1
    assert not any(p.endswith("/train/happy/0.png") for p in data.train.paths + data.val.paths)
    assert any(p.endswith("copy-of-train-0.png") for p in data.test.paths)


# --- the cache ------------------------------------------------------------------------


def test_a_second_load_hits_the_cache_and_changes_rebuild_it(tmp_path):
    folder = class_folders(tmp_path / "faces")
    cfg = FolderDataConfig(path=str(folder), cache_dir=str(tmp_path / "cache"), seed=0, **SPLIT)
    first = load(cfg)
    again = load(cfg)
    assert not first.from_cache and again.from_cache
    assert again.digest == first.digest and np.array_equal(again.train.x, first.train.x)
    assert again.train.paths == first.train.paths

    touched = folder / "happy" / "3.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert not load(cfg).from_cache, "a touched file rebuilds"
    assert load(cfg).from_cache
    cfg.resize = Resize.crop
    assert not load(cfg).from_cache, "another preprocessing setting rebuilds"


# --- FER2013 ------------------------------------------------------------------------------


@needs_fer
def test_the_fer2013_image_folder_release(tmp_path):
    root = fer_sample(tmp_path / "fer")
    data = load(Fer2013DataConfig(path=str(root), cache=False, seed=0))
    assert len(data.test) == 16 and len(data.train) + len(data.val) == 60
    assert data.input_shape == (48, 48, 1)
    assert all("/test/" in p and "PublicTest_" in p for p in data.test.paths)


@needs_fer
def test_the_fer2013_csv_release(tmp_path):
    images = (
        sorted((FER / "train" / "happy").glob("*.jpg"))[:12]
        + sorted((FER / "train" / "sad").glob("*.jpg"))[:12]
    )
    path = tmp_path / "fer2013.csv"
    usages = ["Training"] * 8 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        for i, image in enumerate(images):
            pixels = " ".join(str(v) for v in np.asarray(Image.open(image)).ravel())
            writer.writerow([3 if i < 12 else 4, pixels, usages[i % 12]])
        writer.writerow([0, pixels, "Training"])  # angry: not read
    data = load(Fer2013DataConfig(path=str(path), cache=False, public_test=PublicTest.val))
    assert len(data.test) == 4 and len(data.val) == 4 and len(data.train) == 16
    assert data.test.paths[0].startswith("fer2013.csv:row ")
    first = np.asarray(Image.open(images[0]))
    assert any(np.array_equal(first, x[..., 0]) for x in data.train.x)
    moved = load(Fer2013DataConfig(path=str(path), cache=False, public_test=PublicTest.test))
    assert len(moved.test) == 8


@needs_fer
@pytest.mark.parametrize("detector", ["mtcnn", "haar"])
def test_face_cropping_finds_the_face_or_reports_the_image(tmp_path, detector):
    from happysad.config.schema import FaceDetector, Faces, NoFace

    root = tmp_path / "photos"
    for name in ("happy", "sad"):
        face = Image.open(sorted((FER / "train" / name).glob("*.jpg"))[1]).convert("L")
        face = face.resize((96, 96))
        (root / name).mkdir(parents=True)
        for i in range(6):  # a face small in a larger picture
            canvas = Image.new("L", (240, 200), 120 + i)
            canvas.paste(face, (20 * i, 60 + 5 * i))
            canvas.save(root / name / f"face{i}.png")
        noise(900 + (name == "sad")).save(root / name / "no-face.png")
    settings = {
        "seed": 0,
        "image_size": 48,
        "faces": Faces.detect,
        "face_detector": FaceDetector(detector),
        "val_fraction": 0.2,
        "test_fraction": 0.2,
    }
    data = load_folder(root, **settings)
    assert sorted(Path(p).name for p, _ in data.skipped) == ["no-face.png", "no-face.png"]
    assert {r for _, r in data.skipped} == {"no face found"}
    cropped = np.concatenate([data.train.x, data.val.x, data.test.x])[..., 0].astype(float)
    # The crop is the face: little of the flat background is left in its corners.
    assert np.mean([np.std(x[:8, :8]) + np.std(x[-8:, -8:]) for x in cropped]) > 5
    kept = load_folder(root, no_face=NoFace.keep, **settings)
    assert not kept.skipped and len(kept.train) + len(kept.val) + len(kept.test) == 14
