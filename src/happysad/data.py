"""Images on disk -> train/validation/test arrays -> tf.data pipelines.

A data folder has one subfolder per class (`happy/`, `sad/`); the embedded
synthetic set is written as such a folder and read by the same loader. This module
knows nothing of tuning or MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from happysad.config import ColorMode, SyntheticDataConfig
from happysad.errors import DataError
from happysad.synthetic import SyntheticSpec, generate

# The label of an image is its index here: happy is the positive class (1).
CLASS_NAMES = ("sad", "happy")


@dataclass
class Split:
    x: np.ndarray  # uint8, (n, size, size, channels)
    y: np.ndarray  # float32 0/1, (n,)
    paths: list[str]

    def __len__(self) -> int:
        return len(self.y)

    def counts(self) -> dict[str, int]:
        happy = int(self.y.sum())
        return {"happy": happy, "sad": len(self) - happy}


@dataclass
class ImageData:
    train: Split
    val: Split
    test: Split
    path: str  # the folder the images were read from
    image_size: int
    color_mode: ColorMode
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        channels = 1 if self.color_mode is ColorMode.grayscale else 3
        return (self.image_size, self.image_size, channels)

    def summary(self) -> dict[str, Any]:
        """Counts per split and class, as recorded with the sweep."""
        out: dict[str, Any] = {"path": self.path, "image_size": self.image_size}
        out["color_mode"] = self.color_mode.value
        for name in ("train", "val", "test"):
            split = getattr(self, name)
            out[f"{name}_images"] = len(split)
            for label, count in split.counts().items():
                out[f"{name}_{label}"] = count
        out["skipped_files"] = len(self.skipped)
        return out


def load(data: Any) -> ImageData:
    """The images a data config names, split and decoded; raises DataError."""
    if isinstance(data, SyntheticDataConfig):
        spec = SyntheticSpec(
            num_images=data.num_images,
            image_size=data.image_size,
            seed=data.seed,
            hard_fraction=data.hard_fraction,
        )
        folder = generate(spec, data.cache_dir)
    else:
        folder = Path(data.path).expanduser()
    return load_folder(
        folder,
        image_size=data.image_size,
        color_mode=data.color_mode,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        seed=data.seed,
    )


def load_folder(
    folder: str | Path,
    *,
    image_size: int,
    color_mode: ColorMode,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> ImageData:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"data.path '{folder}' does not exist or is not a folder: "
            "point data.path at a folder with happy/ and sad/ subfolders"
        )
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = [c for c in CLASS_NAMES if c not in found]
    if missing:
        raise DataError(
            f"data.path '{folder}' has no {' or '.join(repr(m + '/') for m in missing)} folder "
            f"(found: {', '.join(found) or 'no folders'}): put each class's images in its own folder"
        )

    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[np.ndarray, int, str]]] = {"train": [], "val": [], "test": []}
    skipped: list[tuple[str, str]] = []
    for label, name in enumerate(CLASS_NAMES):
        files = sorted(
            p for p in (folder / name).rglob("*") if p.is_file() and not _hidden(p, folder)
        )
        images = []
        for path in files:
            try:
                images.append((decode(path, image_size, color_mode), label, str(path)))
            except DataError as err:
                skipped.append((str(path), str(err)))
        if not images:
            raise DataError(f"data.path '{folder}': the '{name}/' folder has no readable image")
        order = rng.permutation(len(images))
        n_test = round(len(images) * test_fraction)
        n_val = max(1, round(len(images) * val_fraction))
        if len(images) - n_test - n_val < 1 or (test_fraction > 0 and n_test < 1):
            raise DataError(
                f"data.path '{folder}': '{name}/' has {len(images)} usable images, too few to split "
                f"into train, validation ({val_fraction}) and test ({test_fraction}): add images "
                "or lower data.val_fraction and data.test_fraction"
            )
        picked = [images[i] for i in order]
        parts["test"] += picked[:n_test]
        parts["val"] += picked[n_test : n_test + n_val]
        parts["train"] += picked[n_test + n_val :]

    splits = {}
    for name, items in parts.items():
        # Interleave the classes so that any prefix of a split is balanced like the whole.
        items = [items[i] for i in rng.permutation(len(items))]
        channels = 1 if color_mode is ColorMode.grayscale else 3
        x = (
            np.stack([i[0] for i in items])
            if items
            else np.zeros((0, image_size, image_size, channels), np.uint8)
        )
        y = np.array([i[1] for i in items], dtype=np.float32)
        splits[name] = Split(x=x, y=y, paths=[i[2] for i in items])
    return ImageData(
        **splits,
        path=str(folder.resolve()),
        image_size=image_size,
        color_mode=color_mode,
        skipped=skipped,
    )


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def decode(path: str | Path, image_size: int, color_mode: ColorMode) -> np.ndarray:
    """One image file as uint8 (size, size, channels); raises DataError if unreadable."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image = image.convert("L" if color_mode is ColorMode.grayscale else "RGB")
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.BILINEAR, reducing_gap=3.0)
            arr = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"not a readable image ({type(err).__name__}: {err})") from err
    return arr[..., None] if arr.ndim == 2 else arr


def to_dataset(split: Split, batch_size: int, *, shuffle: bool, seed: int):
    """A batched tf.data pipeline over a split held in memory."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
