"""The embedded data set: deterministic, balanced, written once as PNG files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from PIL import Image

from happysad.data.synthetic import MANIFEST, SyntheticSpec, draw_face, generate


def _digests(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.png"))
    }


def test_same_seed_and_settings_give_the_same_files(tmp_path):
    spec = SyntheticSpec(num_images=40, image_size=32, seed=3, hard_fraction=0.2)
    a = generate(spec, tmp_path / "a")
    b = generate(spec, tmp_path / "b")
    assert a.name == b.name == spec.digest()
    assert _digests(a) == _digests(b)
    assert len(_digests(a)) == 40


def test_another_seed_gives_other_faces():
    one = SyntheticSpec(num_images=10, image_size=32, seed=1, hard_fraction=0.15)
    two = SyntheticSpec(num_images=10, image_size=32, seed=2, hard_fraction=0.15)
    assert one.digest() != two.digest()
    assert not np.array_equal(np.asarray(draw_face(one, 0)[1]), np.asarray(draw_face(two, 0)[1]))


def test_layout_is_a_class_folder_per_label(tmp_path):
    spec = SyntheticSpec(num_images=30, image_size=48, seed=0, hard_fraction=0.15)
    folder = generate(spec, tmp_path)
    happy = sorted((folder / "happy").glob("*.png"))
    sad = sorted((folder / "sad").glob("*.png"))
    assert len(happy) == 15 and len(sad) == 15
    with Image.open(happy[0]) as image:
        assert image.mode == "L" and image.size == (48, 48)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["num_images"] == 30 and manifest["seed"] == 0


def test_a_finished_set_is_reused_not_redrawn(tmp_path):
    spec = SyntheticSpec(num_images=20, image_size=32, seed=0, hard_fraction=0.15)
    folder = generate(spec, tmp_path)
    marker = folder / "happy" / "face_00000.png"
    stamp = marker.stat().st_mtime_ns
    assert generate(spec, tmp_path) == folder
    assert marker.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "synthetic").iterdir()] == [folder.name]


def test_faces_vary_and_are_not_blank():
    spec = SyntheticSpec(num_images=20, image_size=48, seed=0, hard_fraction=0.15)
    images = np.stack([np.asarray(draw_face(spec, i)[1], dtype=np.float32) for i in range(20)])
    assert images.std(axis=(1, 2)).min() > 5  # every image has structure
    assert np.abs(images[0] - images[2]).mean() > 10  # two happy faces still differ a lot
