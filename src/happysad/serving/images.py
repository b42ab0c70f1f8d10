"""One image: from file bytes to the array a model takes, the same for training and prediction.

`open_image` reads whatever Pillow can read, whatever its extension says, and
raises `Unusable` with a short reason for what cannot serve as a training image.
`read_file` gives a picture file's bytes, never opening what is not a regular file
(a FIFO, a socket, a device, a folder) and reading the whole file only once its header
is an image's.
`Preprocessing` turns it into a uint8 array of the configured size and color mode;
it is saved with every model so that prediction prepares images the same way.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from dataclasses import asdict, dataclass
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .faces import Face, crop_box, find_faces

# Modes that carry transparency: composited on white before conversion, as a
# browser shows them, rather than letting transparent pixels turn black.
_TRANSPARENT = ("RGBA", "LA", "PA")


class Unusable(Exception):
    """A file that cannot serve as a training image; the message is the reason."""


# What a model's training images were, and so what prediction does with a picture.
CROPS = "crops"  # face crops (FER2013, the synthetic faces): find faces, crop each like them
DETECT = "detect"  # photos whose largest face was found and cropped in training
WHOLE = "whole"  # whole pictures, in training and in prediction


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    color_mode: str = "grayscale"  # grayscale | rgb
    resize: str = "pad"  # pad | crop | stretch
    faces: str = WHOLE  # crops | detect | whole
    face_detector: str = "mtcnn"  # mtcnn | haar
    face_margin: float = 0.25

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "grayscale" else 3

    @property
    def finds_faces(self) -> bool:
        """Whether prediction finds the faces in a picture before classifying."""
        return self.faces != WHOLE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        values = dict(values)
        if "face_crop" in values:  # models saved before data.faces: face_crop none | haar
            crop = values.pop("face_crop")
            values.setdefault("faces", WHOLE if crop == "none" else DETECT)
            if crop != "none":
                values.setdefault("face_detector", crop)
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})

    def apply(self, image: Image.Image, *, keep_without_face: bool = True) -> np.ndarray:
        """The uint8 (size, size, channels) array of an opened training image.

        With `faces=detect` the largest face is cropped; an image where no face is found
        raises Unusable unless `keep_without_face`, in which case it is used whole.
        """
        if self.faces == DETECT:
            found = find_faces(image, self.face_detector)
            if found:
                return self.crop(image, found[0])
            if not keep_without_face:
                raise Unusable("no face found")
        return self.whole(image)

    def whole(self, image: Image.Image) -> np.ndarray:
        """The whole picture as the model's input array."""
        image = image.convert("L" if self.color_mode == "grayscale" else "RGB")
        arr = np.asarray(_fit(image, self.image_size, self.resize), dtype=np.uint8)
        return arr[..., None] if arr.ndim == 2 else arr

    def crop(self, image: Image.Image, face: Face) -> np.ndarray:
        """One face of the picture, framed by data.face_margin, as the model's input array."""
        return self.whole(image.crop(crop_box(face, self.face_margin, image.size)))


def read_file(path: str) -> bytes:
    """The bytes of a picture file; raises Unusable with the reason for anything else.

    What is not a regular file is never opened (opening a FIFO for reading waits for a
    writer for ever); it is checked again on the opened file, in case it was swapped in
    between. Only the header is read until Pillow recognises an image format in it.
    """
    try:
        found = os.stat(path)
    except OSError as err:
        if os.path.islink(path):
            raise Unusable(f"a link that leads nowhere ({err.strerror})") from err
        raise Unusable(f"unreadable: {err.strerror}") from err
    _regular(found.st_mode)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise Unusable(f"unreadable: {err.strerror}") from err
    with os.fdopen(fd, "rb") as f:
        opened = os.fstat(f.fileno())
        _regular(opened.st_mode)
        if opened.st_size == 0:
            raise Unusable("empty file")
        try:
            with os.fdopen(os.dup(f.fileno()), "rb") as header:  # Pillow closes what it opened
                _check_header(header)
            f.seek(0)
            return f.read()
        except OSError as err:
            raise Unusable(f"unreadable: {err.strerror or err}") from err


def _regular(mode: int) -> None:
    """Nothing for a regular file; Unusable saying what it is otherwise."""
    if stat.S_ISREG(mode):
        return
    kind = (
        "a folder"
        if stat.S_ISDIR(mode)
        else "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    raise Unusable(f"{kind}, not a picture file: not opened")


def _check_header(f: IO[bytes]) -> None:
    """Unusable unless Pillow recognises an image format in the file's first bytes
    (it reads only the header). A recognised image that is too large or corrupt is
    left for the decoder to describe."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.open(f).close()
    except UnidentifiedImageError as err:
        raise Unusable("not an image Pillow can read") from err
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError):
        pass


def open_image(source: str | IO[bytes], max_pixels: int) -> Image.Image:
    """The first frame of an image, upright (EXIF orientation applied), in a mode that
    converts faithfully to L or RGB; raises Unusable with the reason otherwise."""
    return open_picture(source, max_pixels, shrink=False)[0]


def open_picture(
    source: str | IO[bytes], max_pixels: int, *, shrink: bool = True
) -> tuple[Image.Image, float]:
    """As open_image, for prediction: a JPEG declaring more than `max_pixels` (a phone's
    48-megapixel photo) is decoded at 1/2, 1/4 or 1/8 of its size by the JPEG decoder
    itself, never beyond `max_pixels`. Returns the picture and the factor from its
    pixels to the file's (1.0 when decoded whole)."""
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > max_pixels:
                scale = _jpeg_scale(width, height, max_pixels)
                if shrink and scale and image.format == "JPEG":
                    image.draft(image.mode, (-(-width // scale), -(-height // scale)))
                if image.size[0] * image.size[1] > max_pixels:  # not shrunk, or not enough
                    raise Unusable(
                        f"too large: declares {width}x{height} pixels, above data.max_pixels={max_pixels}"
                    )
            factor = width / image.size[0]
            image.seek(0)  # GIF, TIFF, WebP: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
            return _eight_bit(image), factor
    except Unusable:
        raise
    except Image.DecompressionBombError as err:
        # Pillow refuses before the size can be read: far beyond any sensible limit.
        raise Unusable(
            f"too large: declares over {2 * Image.MAX_IMAGE_PIXELS} pixels, above data.max_pixels={max_pixels}"
        ) from err
    except UnidentifiedImageError as err:
        raise Unusable("not an image Pillow can read") from err
    except PermissionError as err:
        raise Unusable(f"unreadable: {err.strerror}") from err
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise Unusable(f"truncated or corrupt ({err})") from err


def _jpeg_scale(width: int, height: int, max_pixels: int) -> int | None:
    """The smallest of the JPEG decoder's reductions that fits `max_pixels`."""
    for scale in (2, 4, 8):
        if -(-width // scale) * -(-height // scale) <= max_pixels:
            return scale
    return None


def _eight_bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit grayscale scaled to 8 bits; palettes and transparency resolved."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        low, high = float(arr.min()), float(arr.max())
        scaled = (arr - low) / (high - low or 1.0) * 255.0
        return Image.fromarray(scaled.astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _TRANSPARENT:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "1"):
        return image.convert("RGB" if image.mode != "1" else "L")
    return image


def pixel_digest(image: Image.Image) -> str:
    """The identity of an image's decoded pixels, to find exact duplicates."""
    arr = np.ascontiguousarray(np.asarray(image))
    return hashlib.md5(str(arr.shape).encode() + arr.tobytes()).hexdigest()


def _fit(image: Image.Image, size: int, policy: str) -> Image.Image:
    width, height = image.size
    if (width, height) == (size, size):
        return image
    if policy == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    elif policy == "pad":
        side = max(width, height)
        # Pad with the image's own edge colour, not black: a frame of black around a
        # bright photo is a feature the network would learn.
        fill = _edge_color(image)
        canvas = Image.new(image.mode, (side, side), fill)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image = canvas
    return image.resize((size, size), Image.BILINEAR, reducing_gap=3.0)


def _edge_color(image: Image.Image) -> Any:
    arr = np.asarray(image)
    edges = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    mean = edges.mean(axis=0)
    return tuple(int(v) for v in np.atleast_1d(mean)) if arr.ndim == 3 else int(mean)
