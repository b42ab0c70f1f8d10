"""Image folders for the tests, drawn at test time: noise images by class, a folder
of every kind of odd file, a FER2013-like sample taken from the shared data by path."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import FER


def noise(seed: int, size=(20, 24), mode="L") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def class_folders(root: Path, happy=20, sad=10, mode="L") -> Path:
    for name, count, offset in (("happy", happy, 0), ("sad", sad, 1000)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            noise(offset + i, mode=mode).save(root / name / f"{i}.png")
    return root


def png_declaring(width: int, height: int) -> bytes:
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


def odd_folder(root: Path) -> Path:
    folder = class_folders(root, happy=12, sad=12)
    happy, sad = folder / "happy", folder / "sad"
    (happy / "notes.jpg").write_text("a text file named .jpg")
    buffer = io.BytesIO()
    noise(501, size=(64, 64)).save(buffer, format="JPEG")
    (happy / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (sad / "empty.png").write_bytes(b"")
    (sad / "bomb.png").write_bytes(png_declaring(100_000, 100_000))  # Pillow itself refuses it
    (sad / "large.png").write_bytes(png_declaring(9_000, 9_000))  # only data.max_pixels refuses it
    rgba = noise(502, mode="RGB").convert("RGBA")
    rgba.putalpha(128)
    rgba.save(happy / "rgba.png")
    palette = noise(503, mode="RGB").convert("P", palette=Image.ADAPTIVE)
    palette.info["transparency"] = 0
    palette.save(happy / "palette.png", transparency=0)
    sixteen = (np.linspace(0, 65535, 20 * 24).reshape(24, 20)).astype(np.uint16)
    Image.fromarray(sixteen).save(sad / "sixteen.png")  # mode I;16
    noise(504, mode="RGB").convert("CMYK").save(sad / "cmyk.jpg")
    frames = [noise(505, mode="RGB").convert("P"), noise(506, mode="RGB").convert("P")]
    frames[0].save(happy / "moving.gif", save_all=True, append_images=frames[1:])
    noise(507, mode="RGB").save(sad / "photo.webp")
    noise(508).save(sad / "scan.tiff")
    noise(509).save(happy / "old.bmp")
    noise(510).save(happy / "mislabelled.png")  # the same pixels in both classes
    noise(510).save(sad / "mislabelled-too.png")
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


def fer_sample(root: Path, per_class: int = 30) -> Path:
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
