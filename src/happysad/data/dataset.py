"""Images on disk -> clean train/validation/test arrays -> tf.data pipelines.

Three sources, listed by `sources.py`: a folder with one subfolder per class (or
with train/, test/ and optionally val/ folders that each have them), the FER2013
CSV, and the synthetic set (written as such a folder first). Every file is decoded
once; what cannot serve as a training image is skipped with its reason, exact
duplicates never sit on both sides of a split, and the decoded arrays are cached
until a file or a setting changes. This module knows nothing of tuning or MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from happysad.config.schema import (
    ClassWeight,
    Fer2013DataConfig,
    FolderDataConfig,
    NoFace,
    SyntheticDataConfig,
)
from happysad.data.sources import (
    SPLITS,
    Entry,
    class_folder_entries,
    fer2013_csv_entries,
    folder_entries,
)
from happysad.data.synthetic import SyntheticSpec, generate
from happysad.errors import DataError
from happysad.serving.images import Preprocessing, Unusable, open_image, pixel_digest

# The label of an image is its index here: happy is the positive class (1).
CLASS_NAMES = ("sad", "happy")
# Bump when loading or splitting changes, so that old caches are not reused.
LOADER_VERSION = 1


@dataclass
class Split:
    x: np.ndarray  # uint8, (n, size, size, channels)
    y: np.ndarray  # float32 0/1, (n,)
    paths: list[str]

    def __len__(self) -> int:
        return len(self.y)

    def digests(self) -> list[str]:
        """The identity of each image's pixels as the model sees them (after
        preprocessing): what a backbone records it saw, and a sweep checks against."""
        return [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in self.x]

    def without(self, digests: set[str]) -> Split:
        """This split less the images whose pixels are among `digests`."""
        keep = np.array([d not in digests for d in self.digests()], dtype=bool)
        return Split(
            x=self.x[keep],
            y=self.y[keep],
            paths=[p for p, k in zip(self.paths, keep, strict=True) if k],
        )

    def counts(self, class_names: tuple[str, ...] = CLASS_NAMES) -> dict[str, int]:
        """Images per class, positive class first for two (happy, sad)."""
        labels = np.bincount(self.y.astype(int), minlength=len(class_names))
        order = range(len(class_names))
        return {
            class_names[c]: int(labels[c]) for c in (reversed(order) if len(order) == 2 else order)
        }


@dataclass
class ImageData:
    train: Split
    val: Split
    test: Split
    path: str  # the folder or file the images were read from
    name: str  # what the data set is called in MLflow: "synthetic", or the folder's name
    preprocessing: Preprocessing
    digest: str  # of the decoded pixels and labels of every split
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    class_weight: dict[int, float] | None = None
    from_cache: bool = False
    # The label of an image is its index here (happy/sad, or a pretraining folder's classes).
    class_names: tuple[str, ...] = CLASS_NAMES

    @property
    def image_size(self) -> int:
        return self.preprocessing.image_size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        p = self.preprocessing
        return (p.image_size, p.image_size, p.channels)

    def summary(self) -> dict[str, Any]:
        """Counts per split and class, as recorded with the sweep."""
        out: dict[str, Any] = {"name": self.name, "path": self.path, "digest": self.digest}
        out.update({k: v for k, v in self.preprocessing.to_dict().items()})
        for name in SPLITS:
            split = getattr(self, name)
            out[f"{name}_images"] = len(split)
            for label, count in split.counts(self.class_names).items():
                out[f"{name}_{label}"] = count
        out["skipped_files"] = len(self.skipped)
        out.update({f"duplicates_{k}": v for k, v in self.duplicates.items()})
        return out

    def skipped_by_reason(self) -> Counter:
        return Counter(_reason_kind(reason) for _, reason in self.skipped)


def _reason_kind(reason: str) -> str:
    """'too large: declares ...' -> 'too large'."""
    return reason.split(" (")[0].split(":")[0]


def load(data: Any) -> ImageData:
    """The images a data config names, checked, split, decoded; raises DataError."""
    if isinstance(data, SyntheticDataConfig):
        spec = SyntheticSpec(
            num_images=data.num_images,
            image_size=data.image_size,
            seed=data.seed,
            hard_fraction=data.hard_fraction,
        )
        root = generate(spec, data.cache_dir)
        entries, layout = folder_entries(root, "happy", "sad")
    else:
        root = Path(data.path).expanduser()
        if isinstance(data, Fer2013DataConfig) and root.is_file():
            entries, layout = fer2013_csv_entries(root, data.public_test)
        else:
            entries, layout = folder_entries(root, data.happy_folder, data.sad_folder)
    images = _load(entries, layout, root, data, CLASS_NAMES)
    images.name = "synthetic" if isinstance(data, SyntheticDataConfig) else root.stem
    return images


def load_classes(data: Any) -> ImageData:
    """A folder with one subfolder per class, any number of classes (for pretraining a
    backbone): split into train and validation by data.val_fraction, stratified."""
    root = Path(data.path).expanduser()
    entries, class_names = class_folder_entries(root)
    return _load(entries, f"classes:{','.join(class_names)}", root, data, class_names)


def _load(
    entries: list[Entry], layout: str, root: Path, data: Any, class_names: tuple[str, ...]
) -> ImageData:
    prep = Preprocessing(
        image_size=data.image_size,
        color_mode=data.color_mode.value,
        resize=data.resize.value,
        faces=data.faces.value,
        face_detector=data.face_detector.value,
        face_margin=data.face_margin,
    )
    settings = {
        "loader": LOADER_VERSION,
        "preprocessing": prep.to_dict(),
        "no_face": data.no_face.value,
        "max_pixels": data.max_pixels,
        "seed": data.seed,
        "val_fraction": data.val_fraction,
        "test_fraction": data.test_fraction,
        "layout": layout,
    }
    key = _cache_key(entries, settings)
    cache = Path(data.cache_dir) / "decoded" / f"{key}.npz"
    images = _read_cache(cache, root, prep, class_names) if data.cache else None
    if images is None:
        images = _build(entries, root, prep, data, class_names)
        if data.cache:
            _write_cache(cache, images)
    if data.class_weight is ClassWeight.balanced:
        images.class_weight = balanced_weights(images.train.y, len(class_names))
    return images


# --- decoding, duplicates and splits ------------------------------------------------


@dataclass
class _Decoded:
    entry: Entry
    pixels: np.ndarray
    digest: str


def _decode(
    entry: Entry, prep: Preprocessing, max_pixels: int, keep_without_face: bool
) -> _Decoded:
    source = entry.read() if callable(entry.read) else entry.read
    if isinstance(source, str) and os.path.getsize(source) == 0:
        raise Unusable("empty file")
    image = open_image(source, max_pixels)
    return _Decoded(
        entry, prep.apply(image, keep_without_face=keep_without_face), pixel_digest(image)
    )


def _build(
    entries: list[Entry], root: Path, prep: Preprocessing, data: Any, class_names: tuple[str, ...]
) -> ImageData:
    keep = data.no_face is NoFace.keep

    def attempt(entry: Entry) -> _Decoded | tuple[str, str]:
        try:
            return _decode(entry, prep, data.max_pixels, keep)
        except Unusable as err:
            return (entry.key, str(err))
        except OSError as err:  # listed, then gone or locked before it was read
            return (entry.key, f"unreadable: {err}")

    with ThreadPoolExecutor(min(os.cpu_count() or 1, 8)) as pool:
        outcomes = list(pool.map(attempt, entries))
    decoded = [o for o in outcomes if isinstance(o, _Decoded)]
    skipped = [o for o in outcomes if isinstance(o, tuple)]
    groups, dropped = _resolve_duplicates(decoded, skipped)
    for label in range(len(class_names)):
        if not any(g[0].entry.label == label for g in groups):
            keys = {e.key for e in entries if e.label == label}
            why = Counter(_reason_kind(r) for k, r in skipped if k in keys)
            reasons = ", ".join(f"{n} {kind}" for kind, n in why.most_common()) or "no files"
            raise DataError(
                f"data.path '{root}': no usable {class_names[label]} image ({len(keys)} files: "
                f"{reasons}): add readable images to that class's folder"
            )
    parts = _assign_splits(groups, data, root, class_names)
    splits = {name: _stack(items, prep) for name, items in parts.items()}
    return ImageData(
        **splits,
        path=str(root.resolve()),
        name=root.stem,
        preprocessing=prep,
        digest=content_digest(splits),
        skipped=skipped,
        duplicates=dropped,
        class_names=class_names,
    )


def _resolve_duplicates(decoded: list[_Decoded], skipped: list[tuple[str, str]]):
    """Images with identical pixels: a group whose labels disagree is left out, each
    file added to `skipped`; a group that spans given splits keeps only the copies of
    one split (test before val before train). Returns the groups and the counts."""
    groups: dict[str, list[_Decoded]] = defaultdict(list)
    for d in decoded:
        groups[d.digest].append(d)
    kept, counts = [], {"groups": 0, "conflicting_labels": 0, "dropped_across_splits": 0}
    rank = {"test": 0, "val": 1, "train": 2, None: 3}
    for members in groups.values():
        if len(members) > 1:
            counts["groups"] += 1
        if len({m.entry.label for m in members}) > 1:
            counts["conflicting_labels"] += len(members)
            others = ", ".join(m.entry.key for m in members)
            skipped += [
                (m.entry.key, f"duplicate with conflicting labels ({others})") for m in members
            ]
            continue
        first = min(rank[m.entry.split] for m in members)
        stay = [m for m in members if rank[m.entry.split] == first]
        counts["dropped_across_splits"] += len(members) - len(stay)
        # Copies in one split stay together: a group is one unit when splitting.
        kept.append(stay)
    return kept, counts


def _assign_splits(
    groups: list[list[_Decoded]], data: Any, root: Path, class_names: tuple[str, ...]
) -> dict[str, list]:
    """The splits the data gives (train/, val/, test/ folders, or the CSV's Usage); the
    rest drawn by fraction, stratified by class and reproducible from data.seed, each
    duplicate group kept on one side."""
    rng = np.random.default_rng(data.seed)
    given = {g[0].entry.split for g in groups} - {None}
    # Validation comes out of train/ unless there is a val/ folder; test is drawn only
    # when the data gives no splits at all.
    fractions = {
        "val": 0.0 if "val" in given else data.val_fraction,
        "test": 0.0 if given else data.test_fraction,
    }
    parts: dict[str, list[_Decoded]] = {name: [] for name in SPLITS}
    free: list[list[_Decoded]] = []
    for group in groups:
        split = group[0].entry.split
        if split is None or (split == "train" and "val" not in given):
            free.append(group)
        else:
            parts[split] += group
    for label in range(len(class_names)):
        units = [g for g in free if g[0].entry.label == label]
        if not units:
            continue  # every image of this class sits in a split the data gives
        units = [units[i] for i in rng.permutation(len(units))]
        n_test = max(1, round(len(units) * fractions["test"])) if fractions["test"] else 0
        n_val = max(1, round(len(units) * fractions["val"])) if fractions["val"] else 0
        if len(units) - n_test - n_val < 1:
            raise DataError(
                f"data.path '{root}': {len(units)} usable {class_names[label]} images are too few to "
                f"split into train, validation ({fractions['val']}) and test ({fractions['test']}): "
                "add images, or lower data.val_fraction and data.test_fraction"
            )
        for i, unit in enumerate(units):
            parts["test" if i < n_test else "val" if i < n_test + n_val else "train"] += unit
    for name in SPLITS:
        if not parts[name] and not (name == "test" and fractions["test"] == 0 and not given):
            raise DataError(f"data.path '{root}': the {name} split has no usable image")
    # Interleave the classes so that any prefix of a split is balanced like the whole.
    return {name: [items[i] for i in rng.permutation(len(items))] for name, items in parts.items()}


def _stack(items: list[_Decoded], prep: Preprocessing) -> Split:
    shape = (prep.image_size, prep.image_size, prep.channels)
    x = np.stack([d.pixels for d in items]) if items else np.zeros((0, *shape), np.uint8)
    y = np.array([d.entry.label for d in items], dtype=np.float32)
    return Split(x=x, y=y, paths=[d.entry.key for d in items])


def content_digest(splits: dict[str, Split]) -> str:
    """The identity of a data set: every split's pixels and labels."""
    h = hashlib.sha256()
    for name in SPLITS:
        h.update(name.encode())
        h.update(np.ascontiguousarray(splits[name].x).tobytes())
        h.update(splits[name].y.tobytes())
    return h.hexdigest()[:16]


def balanced_weights(y: np.ndarray, classes: int = 2) -> dict[int, float]:
    counts = np.bincount(y.astype(int), minlength=classes)
    return {c: float(len(y) / (classes * counts[c])) for c in range(classes) if counts[c]}


# --- the decoded cache ------------------------------------------------------------


def _cache_key(entries: list[Entry], settings: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for e in entries:
        h.update(f"{e.key}\0{e.label}\0{e.split}\0{e.stamp}\n".encode())
    return h.hexdigest()[:24]


def _write_cache(path: Path, images: ImageData) -> None:
    """Written to a temporary file and renamed, so a reader never sees half a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "digest": images.digest,
        "skipped": images.skipped,
        "duplicates": images.duplicates,
        "paths": {name: getattr(images, name).paths for name in SPLITS},
        "class_names": list(images.class_names),
    }
    arrays = {
        f"{name}_{part}": getattr(getattr(images, name), part)
        for name in SPLITS
        for part in ("x", "y")
    }
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_cache(
    path: Path, root: Path, prep: Preprocessing, class_names: tuple[str, ...]
) -> ImageData | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            splits = {
                name: Split(x=npz[f"{name}_x"], y=npz[f"{name}_y"], paths=meta["paths"][name])
                for name in SPLITS
            }
    except (OSError, ValueError, KeyError):
        return None  # unreadable or from another version: rebuilt
    return ImageData(
        **splits,
        path=str(root.resolve()),
        name=root.stem,
        preprocessing=prep,
        digest=meta["digest"],
        skipped=[tuple(s) for s in meta["skipped"]],
        duplicates=meta["duplicates"],
        from_cache=True,
        class_names=class_names,
    )


# --- training input ---------------------------------------------------------------


def to_dataset(split: Split, batch_size: int, *, shuffle: bool, seed: int):
    """A batched tf.data pipeline over a split held in memory."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load_folder(folder: str | Path, **settings: Any) -> ImageData:
    """A folder of images as data=folder loads it, with these settings and no cache."""
    return load(FolderDataConfig(path=str(folder), cache=False, **settings))
