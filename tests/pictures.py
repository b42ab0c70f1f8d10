"""Pictures for the tests: real face photos (the shared muxspace set, by path) pasted at
known places into face-free backgrounds."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

MUX = REPO.parent / "shared" / "data" / "muxspace-happysad"
needs_mux = pytest.mark.skipif(
    not MUX.is_dir(), reason=f"the shared muxspace photos are not at {MUX}"
)


def background(size: tuple[int, int], seed: int) -> Image.Image:
    """A face-free picture: smooth noise over a gradient, in colour."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 220, (size[1] // 40 + 2, size[0] // 40 + 2, 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize(size, Image.BICUBIC)
    ramp = np.linspace(0, 40, size[0], dtype=np.float32)[None, :, None]
    return Image.fromarray(np.clip(np.asarray(image) + ramp, 0, 255).astype(np.uint8))


def face_photo(name: str, side: int) -> Image.Image:
    """A real face photo (the face fills it), scaled to `side`."""
    return Image.open(MUX / name).convert("RGB").resize((side, side), Image.BICUBIC)


FACES = [
    "happy/Adolfo_Rodriguez_Saa_0001.jpg",
    "happy/Al_Gore_0007.jpg",
    "sad/" + sorted(p.name for p in (MUX / "sad").glob("*.jpg"))[0] if MUX.is_dir() else "",
]


def composite(places: list[tuple[int, int, int]], size=(900, 600), seed=0) -> Image.Image:
    """Faces pasted at (x, y, side) into a face-free background."""
    picture = background(size, seed)
    for (x, y, side), name in zip(places, FACES, strict=False):
        picture.paste(face_photo(name, side), (x, y))
    return picture


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


THREE = [(60, 80, 220), (420, 60, 150), (650, 330, 180)]
