"""The search space: which config values a sweep searches, under which names, on which
conditions, and how each is declared to keras-tuner.

schema.py types the spaces (a `value`, `choices`, or a range); this module decides what
of them a sweep searches (`searchable`, printed, logged as `search_space.json` and
fingerprinted for resume) and declares exactly those to keras-tuner (`draw`), so the
two can never disagree. The hypermodel only builds layers from the values drawn here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from happysad.config.schema import (
    NO_BACKBONE,
    SPACES,
    Conv,
    Head,
    IntSpace,
    OptimizerName,
    Padding,
    Sampling,
    Schedule,
    describe,
    space_values,
)

if TYPE_CHECKING:  # keras-tuner imports TensorFlow, which config validation must not
    import keras_tuner

AUGMENTATIONS = ("rotation", "zoom", "translation", "contrast", "brightness", "erasing")
# Optimizer settings and the optimizers that use them: searched only while one is drawn.
OPTIMIZER_SETTINGS = {
    "momentum": {OptimizerName.sgd, OptimizerName.rmsprop},
    "weight_decay": {OptimizerName.adamw},
}


def searchable(cfg: Any) -> dict[str, Any]:
    """The spaces a sweep searches, by their public name (`model.depth`, ...).

    Each name is what the override that changes it starts with: `model.filters.1` is
    changed by `model.filters.1.choices=[32,64]`. Spaces that no model of this config
    uses are left out, as `draw` never declares them: the filters of blocks deeper than
    the deepest model, `model.dense_units` when no model has a dense layer, momentum
    unless sgd or rmsprop can be chosen, weight decay unless adamw can, the warm-up
    unless the cosine schedule can, residual shortcuts unless padding is same, the
    blocks' own spaces when every model starts from a backbone, and the frozen blocks
    and the backbone's learning rate when none does.
    """
    m = cfg.model
    # In the order keras-tuner declares them: the backbone (the blocks' spaces depend
    # on it), depth, kernel size, each block's filters.
    out: dict[str, Any] = {
        "model.backbone": m.backbone,
        "model.depth": m.depth,
        "model.kernel_size": m.kernel_size,
    }
    for block, space in enumerate(m.filters[: max(space_values(m.depth))]):
        out[f"model.filters.{block}"] = space
    for section in ("model", "augmentation", "optimizer"):
        node = getattr(cfg, section)
        for name, value in vars(node).items():
            if isinstance(value, SPACES):
                out.setdefault(f"{section}.{name}", value)
    out["data.batch_size"] = cfg.data.batch_size
    if not any(n > 0 for n in space_values(cfg.model.dense_layers)):
        del out["model.dense_units"]  # no dense layer to size
    names = optimizer_names(cfg)
    for setting, users in OPTIMIZER_SETTINGS.items():
        if not users & set(names):
            del out[f"optimizer.{setting}"]
    if Schedule.cosine not in space_values(cfg.optimizer.schedule):
        del out["optimizer.warmup_epochs"]  # only the cosine schedule warms up
    if m.padding is not Padding.same:
        del out["model.residual"]  # validation refuses residual=true without it
    if not own_blocks(cfg):
        for key in [k for k in out if k.startswith(BLOCK_SPACES)]:
            del out[key]
    if not backbones(cfg):
        del out["model.frozen_blocks"], out["optimizer.backbone_lr_scale"]
    return out


# The spaces of the model's own blocks, which a backbone replaces.
BLOCK_SPACES = (
    "model.depth",
    "model.kernel_size",
    "model.filters.",
    "model.convs_per_block",
    "model.conv",
    "model.batch_norm",
    "model.residual",
    "model.block_dropout",
)


def backbones(cfg: Any) -> list[str]:
    """The backbone URIs a sweep can draw."""
    return [b for b in space_values(cfg.model.backbone) if b != NO_BACKBONE]


def own_blocks(cfg: Any) -> bool:
    """Whether some trial builds its own blocks (model.backbone can be none)."""
    return NO_BACKBONE in space_values(cfg.model.backbone)


def summary(cfg: Any) -> dict[str, str]:
    """The searched spaces as text, by name: printed, logged and fingerprinted."""
    return {key: describe(space) for key, space in searchable(cfg).items()}


def optimizer_names(cfg: Any) -> list[OptimizerName]:
    o = cfg.optimizer.name
    return space_values(o) if o.value or o.choices else []


# --- declaring to keras-tuner ------------------------------------------------------


@dataclass
class Drawn:
    """One trial's architecture and training settings, as drawn by keras-tuner."""

    depth: int | None  # None for the blocks of a backbone
    kernel_size: int | None
    filters: list[int]  # one per block of this depth
    dense_layers: int
    dense_units: int | None
    dropout: float
    augmentation: dict[str, float]  # strength by name; 0 leaves the layer out
    optimizer: OptimizerName
    learning_rate: float
    momentum: float | None
    weight_decay: float | None
    # The blocks of strong face models (the seed's network has none of them).
    convs_per_block: int = 1
    conv: Conv = Conv.plain
    batch_norm: bool = False
    residual: bool = False
    block_dropout: float = 0.0
    head: Head = Head.flatten
    schedule: Schedule = Schedule.constant
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    # Transfer: a backbone's URI (its blocks replace depth, filters, ...), or none.
    backbone: str = NO_BACKBONE
    frozen_blocks: int = 0
    backbone_lr_scale: float = 1.0


def draw(cfg: Any, hp: keras_tuner.HyperParameters) -> Drawn:
    """Declare the space on `hp` and return this trial's values. The order of the
    declarations is the order keras-tuner draws in: keep it, or the same seed draws
    other trials."""
    m = cfg.model
    backbone = declare(hp, "model.backbone", m.backbone)
    uris = backbones(cfg)
    # The blocks' own spaces exist in trials without a backbone, the backbone's
    # settings in trials with one.
    own = own_blocks(cfg)
    depth = kernel = convs = conv = batch_norm = residual = block_dropout = None
    filters: list[int | None] = []
    if own:
        with _only_when(hp, cfg, [NO_BACKBONE] if uris else None):
            depth = declare(hp, "model.depth", m.depth)
            kernel = declare(hp, "model.kernel_size", m.kernel_size)
            # Every block some depth could have is declared, so that keras-tuner sees
            # the conditional filters of the deeper blocks from the start.
            filters = [_filters(cfg, hp, b) for b in range(max(space_values(m.depth)))]
    dense_layers = declare(hp, "model.dense_layers", m.dense_layers)
    units = _dense_units(cfg, hp)
    dropout = declare(hp, "model.dropout", m.dropout)
    if own:
        with _only_when(hp, cfg, [NO_BACKBONE] if uris else None):
            convs = declare(hp, "model.convs_per_block", m.convs_per_block)
            conv = declare(hp, "model.conv", m.conv)
            batch_norm = declare(hp, "model.batch_norm", m.batch_norm)
            if m.padding is Padding.same:
                residual = declare(hp, "model.residual", m.residual)
            block_dropout = declare(hp, "model.block_dropout", m.block_dropout)
    head = Head(declare(hp, "model.head", m.head))
    frozen = None
    if uris:
        with _only_when(hp, cfg, uris):
            frozen = declare(hp, "model.frozen_blocks", m.frozen_blocks)
    a = cfg.augmentation
    strength = {
        name: declare(hp, f"augmentation.{name}", getattr(a, name)) for name in AUGMENTATIONS
    }
    o = cfg.optimizer
    name = OptimizerName(declare(hp, "optimizer.name", o.name))
    lr = declare(hp, "optimizer.learning_rate", o.learning_rate)
    # Declared whatever the optimizer drawn, so keras-tuner sees both from the start.
    settings = {setting: _optimizer_setting(cfg, hp, setting) for setting in OPTIMIZER_SETTINGS}
    schedule = Schedule(declare(hp, "optimizer.schedule", o.schedule))
    warmup = _warmup(cfg, hp)
    scale = None
    if uris:
        with _only_when(hp, cfg, uris):
            scale = declare(hp, "optimizer.backbone_lr_scale", o.backbone_lr_scale)
    smoothing = declare(hp, "optimizer.label_smoothing", o.label_smoothing)
    return Drawn(
        depth=depth,
        kernel_size=kernel,
        filters=filters[:depth] if depth else [],
        dense_layers=dense_layers,
        dense_units=units,
        dropout=dropout,
        augmentation=strength,
        optimizer=name,
        learning_rate=lr,
        momentum=settings["momentum"],
        weight_decay=settings["weight_decay"],
        convs_per_block=convs or 1,
        conv=Conv(conv) if conv else Conv.plain,
        batch_norm=bool(batch_norm),
        residual=bool(residual),
        block_dropout=block_dropout or 0.0,
        backbone=backbone,
        frozen_blocks=frozen or 0,
        backbone_lr_scale=scale if scale is not None else 1.0,
        head=head,
        schedule=schedule,
        warmup_epochs=warmup,
        label_smoothing=smoothing,
    )


def batch_size(cfg: Any, hp: keras_tuner.HyperParameters) -> int:
    return declare(hp, "data.batch_size", cfg.data.batch_size)


def declare(hp: keras_tuner.HyperParameters, name: str, space: Any) -> Any:
    """Declare one config space as a keras-tuner hyperparameter and return its value."""
    if space.value is not None:
        return hp.Fixed(name, _plain(space.value))
    if space.choices is not None:
        values = list(dict.fromkeys(_plain(c) for c in space.choices))
        if len(values) == 1:
            return hp.Fixed(name, values[0])
        if all(isinstance(v, bool) for v in values):
            return hp.Boolean(name)  # Choice would take them for the ints 0 and 1
        return hp.Choice(name, values)
    if space.min == space.max:
        return hp.Fixed(name, space.min)
    kind = hp.Int if isinstance(space, IntSpace) else hp.Float
    return kind(
        name,
        min_value=space.min,
        max_value=space.max,
        step=space.step,
        sampling=space.sampling.value if space.sampling is not Sampling.linear else "linear",
    )


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _filters(cfg: Any, hp: keras_tuner.HyperParameters, block: int) -> int | None:
    """Filters of one block (from 0), active only when the drawn depth has that block."""
    m = cfg.model
    name, space = f"model.filters.{block}", m.filters[block]
    depths = space_values(m.depth)
    if block < min(depths):
        return declare(hp, name, space)
    with hp.conditional_scope("model.depth", [d for d in depths if d > block]):
        return declare(hp, name, space)


def _dense_units(cfg: Any, hp: keras_tuner.HyperParameters) -> int | None:
    """Units of the dense layers, searched only when there are dense layers."""
    m = cfg.model
    with_layers = [n for n in space_values(m.dense_layers) if n > 0]
    if not with_layers:
        return None
    if len(with_layers) == len(space_values(m.dense_layers)):
        return declare(hp, "model.dense_units", m.dense_units)
    with hp.conditional_scope("model.dense_layers", with_layers):
        return declare(hp, "model.dense_units", m.dense_units)


def _optimizer_setting(cfg: Any, hp: keras_tuner.HyperParameters, setting: str) -> float | None:
    """An optimizer setting, searched only while an optimizer that uses it is drawn."""
    names = space_values(cfg.optimizer.name)
    users = [n.value for n in names if n in OPTIMIZER_SETTINGS[setting]]
    if not users:
        return None
    space = getattr(cfg.optimizer, setting)
    if len(names) == 1:
        return declare(hp, f"optimizer.{setting}", space)
    with hp.conditional_scope("optimizer.name", users):
        return declare(hp, f"optimizer.{setting}", space)


def _warmup(cfg: Any, hp: keras_tuner.HyperParameters) -> int:
    """Warm-up epochs, searched only while the cosine schedule is drawn."""
    schedules = space_values(cfg.optimizer.schedule)
    if Schedule.cosine not in schedules:
        return 0
    if len(schedules) == 1:
        return declare(hp, "optimizer.warmup_epochs", cfg.optimizer.warmup_epochs)
    with hp.conditional_scope("optimizer.schedule", [Schedule.cosine.value]):
        return declare(hp, "optimizer.warmup_epochs", cfg.optimizer.warmup_epochs) or 0


@contextlib.contextmanager
def _only_when(hp: keras_tuner.HyperParameters, cfg: Any, backbones: list[str] | None):
    """Declarations active only for these values of model.backbone (None: always)."""
    if backbones is None or len(space_values(cfg.model.backbone)) == 1:
        yield
        return
    with hp.conditional_scope("model.backbone", backbones):
        yield
