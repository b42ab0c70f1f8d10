"""Pretrained backbones in sweeps (`model.backbone=models:/happysad-backbone/1`).

Each backbone a sweep can draw is fetched once from MLflow, before any training, and
checked against the sweep's data: a backbone pretrained on other pixels (size, colour
mode, resizing, framing) is a configuration error, not a failed trial. A trial that
draws one builds on a fresh copy of its blocks, with the first `model.frozen_blocks`
kept as trained and the others learning at `optimizer.backbone_lr_scale` times the
head's learning rate.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from happysad.config import search_space
from happysad.errors import ConfigError
from happysad.model import shortcuts
from happysad.serving.images import Preprocessing
from happysad.tracking.models import fetch_backbone

log = logging.getLogger("happysad")

BACKBONE = "backbone"  # the blocks' own Keras model, inside the classifier
_BLOCK = re.compile(r"block(\d+)_")
# What must match between a backbone's pixels and the sweep's.
FITS = ("image_size", "color_mode", "resize", "faces")
# On the pretraining run: the pixel digest of every image the backbone saw.
SEEN_IMAGES = "data/seen_images.txt"


@dataclass(frozen=True)
class Backbone:
    uri: str
    path: str  # its Keras file, downloaded into the sweep's folder
    blocks: int
    run_id: str  # the pretraining run: lineage back to its data
    data_digest: str
    input_shape: tuple[int, int, int]


def prepare(cfg: Any, store: Any, images: Any, folder: Path) -> dict[str, Backbone]:
    """The backbones the sweep can draw, fetched and checked against the sweep's data
    `images`; raises ConfigError or StoreError before any training."""
    out = {}
    frozen = max(search_space.space_values(cfg.model.frozen_blocks), default=0)
    for i, uri in enumerate(search_space.backbones(cfg)):
        path, meta = fetch_backbone(store, uri, folder / f"backbone-{i}")
        check_fits(uri, meta, images.preprocessing, images.input_shape)
        check_unseen(uri, meta, store, images)
        backbone = Backbone(
            uri=uri,
            path=str(path),
            blocks=int(meta["blocks"]),
            run_id=str(meta.get("run_id", "")),
            data_digest=str(meta.get("data_digest", "")),
            input_shape=tuple(meta["input_shape"]),
        )
        if frozen > backbone.blocks:
            raise ConfigError(
                f"model.frozen_blocks reaches {frozen} but the backbone {uri} has "
                f"{backbone.blocks} blocks: freeze at most {backbone.blocks}"
            )
        out[uri] = backbone
    return out


def check_fits(uri: str, meta: dict[str, Any], prep: Preprocessing, input_shape: tuple) -> None:
    theirs, ours = meta.get("preprocessing", {}), prep.to_dict()
    differ = [k for k in FITS if theirs.get(k) != ours.get(k)]
    if tuple(meta.get("input_shape", ())) != tuple(input_shape) or differ:
        shown = ", ".join(f"{k} {theirs.get(k)} (data: {ours.get(k)})" for k in differ)
        raise ConfigError(
            f"model.backbone={uri} was pretrained on {tuple(meta.get('input_shape', ()))} "
            f"images{': ' + shown if shown else ''}, but the sweep's data are "
            f"{tuple(input_shape)}: pretrain a backbone with the same data.image_size, "
            "data.color_mode, data.resize and data.faces, or set the sweep's to the backbone's"
        )


def check_unseen(uri: str, meta: dict[str, Any], store: Any, images: Any) -> None:
    """A backbone that saw the sweep's validation or test images would flatter its
    trials on the very images that choose among them (and report them): refused."""
    if not meta.get("seen_images"):
        log.warning(
            f"model.backbone={uri} does not record which images it saw (pretrained before "
            "backbones recorded them): whether it saw this sweep's validation or test "
            "images cannot be checked"
        )
        return
    seen = set(store.read_text(meta["run_id"], meta["seen_images"]).split())
    ours = {"validation": images.val.digests(), "test": images.test.digests()}
    overlap = {name: sum(d in seen for d in digests) for name, digests in ours.items()}
    if any(overlap.values()):
        shown = " and ".join(
            f"{n} of its {len(ours[name])} {name} images" for name, n in overlap.items() if n
        )
        raise ConfigError(
            f"model.backbone={uri} was pretrained on {shown}: they would flatter its "
            "trials where they are chosen and reported; pretrain it again with "
            "pretrain.hold_out.path=<this sweep's data.path> (and its data.seed and "
            "data.val_fraction)"
        )


def load(backbone: Backbone, frozen_blocks: int):
    """A fresh copy of the backbone's blocks, the first `frozen_blocks` not trainable
    (their batch normalisation then runs in inference mode too)."""
    import keras

    # A backbone saved with strided shortcuts is trained in their safe form.
    model = shortcuts.unstrided(keras.saving.load_model(backbone.path, compile=False))
    for layer in model.layers:
        match = _BLOCK.match(layer.name)
        if match and int(match.group(1)) < frozen_blocks:
            layer.trainable = False
    return model


def scaled(optimizer, variables: list, scale: float):
    """`optimizer`, with the learning rate of `variables` multiplied by `scale`.

    Keras has no per-layer learning rate; this is the optimizer's own class with its
    update step scaled for those variables. hypermodel.portable compiles the model
    again with the plain class before it is saved, so loading it needs no happysad."""
    if scale == 1.0 or not variables:
        return optimizer
    base = type(optimizer)
    ids = {id(v) for v in variables} | {id(getattr(v, "value", v)) for v in variables}

    class Scaled(base):
        def update_step(self, gradient, variable, learning_rate):
            if id(variable) in ids:
                learning_rate = learning_rate * scale
            return super().update_step(gradient, variable, learning_rate)

    Scaled.__name__ = f"BackboneScaled{base.__name__}"
    instance = Scaled.from_config(optimizer.get_config())
    instance.plain_class = base
    return instance
