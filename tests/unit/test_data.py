"""Loading real folders: odd files, given and drawn splits, duplicates, FER2013, the cache."""

from __future__ import annotations

import csv
import io
import os
import shutil
import struct
import zlib
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

SPLIT = {"image_size": 16, "val_fraction": 0.2, "test_fraction": 0.2}
needs_fer = pytest.mark.skipif(
    not FER.is_dir(), reason=f"the shared FER2013 sample is not at {FER}"
)


def _noise(seed: int, size=(20, 24), mode="L") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def _folder(root: Path, happy=20, sad=10, mode="L") -> Path:
    for name, count, offset in (("happy", happy, 0), ("sad", sad, 1000)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _noise(offset + i, mode=mode).save(root / name / f"{i}.png")
    return root


def test_splits_are_stratified_and_reproducible(tmp_path):
    folder = _folder(tmp_path / "faces")
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


def test_given_train_and_test_folders_are_kept_and_validation_comes_from_train(tmp_path):
    _folder(tmp_path / "faces" / "train", happy=20, sad=10)
    _folder(tmp_path / "faces" / "test", happy=0, sad=0)
    for name, offset in (("happy", 5000), ("sad", 6000)):
        for i in range(3):
            _noise(offset + i).save(tmp_path / "faces" / "test" / name / f"t{i}.png")
    data = load_folder(tmp_path / "faces", seed=0, **SPLIT)
    assert all("/test/" in p for p in data.test.paths) and len(data.test) == 6
    assert all("/train/" in p for p in data.train.paths + data.val.paths)
    assert len(data.val) == 6 and len(data.train) == 24


def test_class_folder_names_are_configurable(tmp_path):
    folder = _folder(tmp_path / "faces")
    (folder / "happy").rename(folder / "smile")
    (folder / "sad").rename(folder / "frown")
    data = load_folder(folder, seed=0, happy_folder="smile", sad_folder="frown", **SPLIT)
    assert data.train.counts()["happy"] == 12


def test_rgb_mode(tmp_path):
    data = load_folder(
        _folder(tmp_path / "faces", mode="RGB"), seed=0, color_mode=ColorMode.rgb, **SPLIT
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
    folder = _folder(tmp_path / "faces", sad=0)
    (folder / "sad" / "a.jpg").write_text("not a picture")
    (folder / "sad" / "b.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"no usable sad image \(2 files: 1 .*, 1 .*\)"):
        load_folder(folder, seed=0, **SPLIT)


def test_too_few_images_to_split(tmp_path):
    with pytest.raises(DataError, match="too few to split"):
        load_folder(_folder(tmp_path / "faces", happy=20, sad=2), seed=0, **SPLIT)


# --- every kind of odd file -----------------------------------------------------------


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 8))
        + chunk(b"IEND", b"")
    )


def _odd_folder(root: Path) -> Path:
    folder = _folder(root, happy=12, sad=12)
    happy, sad = folder / "happy", folder / "sad"
    (happy / "notes.jpg").write_text("a text file named .jpg")
    buffer = io.BytesIO()
    _noise(501, size=(64, 64)).save(buffer, format="JPEG")
    (happy / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (sad / "empty.png").write_bytes(b"")
    (sad / "bomb.png").write_bytes(_png_declaring(100_000, 100_000))  # Pillow itself refuses it
    (sad / "large.png").write_bytes(_png_declaring(9_000, 9_000))  # only data.max_pixels refuses it
    rgba = _noise(502, mode="RGB").convert("RGBA")
    rgba.putalpha(128)
    rgba.save(happy / "rgba.png")
    palette = _noise(503, mode="RGB").convert("P", palette=Image.ADAPTIVE)
    palette.info["transparency"] = 0
    palette.save(happy / "palette.png", transparency=0)
    sixteen = (np.linspace(0, 65535, 20 * 24).reshape(24, 20)).astype(np.uint16)
    Image.fromarray(sixteen).save(sad / "sixteen.png")  # mode I;16
    _noise(504, mode="RGB").convert("CMYK").save(sad / "cmyk.jpg")
    frames = [_noise(505, mode="RGB").convert("P"), _noise(506, mode="RGB").convert("P")]
    frames[0].save(happy / "moving.gif", save_all=True, append_images=frames[1:])
    _noise(507, mode="RGB").save(sad / "photo.webp")
    _noise(508).save(sad / "scan.tiff")
    _noise(509).save(happy / "old.bmp")
    _noise(510).save(happy / "mislabelled.png")  # the same pixels in both classes
    _noise(510).save(sad / "mislabelled-too.png")
    upright = np.zeros((24, 20), np.uint8)
    upright[:, 10:] = 255  # dark left half, bright right half, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(upright, "L").save(happy / "rotated.jpg", exif=exif.tobytes(), quality=95)
    for hidden in (happy / ".thumbnails", folder / "__MACOSX" / "happy"):
        hidden.mkdir(parents=True)
        (hidden / "x.png").write_bytes(b"junk")
    (sad / ".DS_Store").write_bytes(b"\0\1\2")
    return folder


def test_every_kind_of_odd_file_is_handled_and_reported(tmp_path):
    data = load_folder(
        _odd_folder(tmp_path / "faces"),
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
    _folder(root / "train", happy=12, sad=12)
    _folder(root / "test", happy=0, sad=0)
    for name, offset in (("happy", 7000), ("sad", 8000)):
        for i in range(3):
            _noise(offset + i).save(root / "test" / name / f"t{i}.png")
    shutil.copy(root / "train" / "happy" / "0.png", root / "test" / "happy" / "copy-of-train-0.png")
    data = load_folder(root, seed=0, **SPLIT)
    assert data.duplicates["dropped_across_splits"] == 1
    assert not any(p.endswith("/train/happy/0.png") for p in data.train.paths + data.val.paths)
    assert any(p.endswith("copy-of-train-0.png") for p in data.test.paths)


# --- the cache ------------------------------------------------------------------------


def test_a_second_load_hits_the_cache_and_changes_rebuild_it(tmp_path):
    folder = _folder(tmp_path / "faces")
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


def _fer_sample(root: Path, per_class: int = 30) -> Path:
    """A few dozen shared FER2013 images per class and split, copied at test time."""
    for split in ("train", "test"):
        for name in ("happy", "sad"):
            (root / split / name).mkdir(parents=True)
            files = sorted((FER / split / name).glob("*.jpg"))[
                : per_class if split == "train" else 8
            ]
            for f in files:
                shutil.copy(f, root / split / name / f.name)
    (root / "train" / "angry").mkdir()  # the seven-class release: other classes are ignored
    return root


@needs_fer
def test_the_fer2013_image_folder_release(tmp_path):
    root = _fer_sample(tmp_path / "fer")
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
        _noise(900 + (name == "sad")).save(root / name / "no-face.png")
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
