"""The search space: which config values a sweep searches, under which names, on which
conditions, and how each is declared to keras-tuner.

config.py types the spaces (a `value`, `choices`, or a range); this module decides what
of them a sweep searches (`searchable`, printed, logged as `search_space.json` and
fingerprinted for resume) and declares exactly those to keras-tuner (`draw`), so the
two can never disagree. The hypermodel only builds layers from the values drawn here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from happysad.config import (
    FloatSpace,
    IntSpace,
    OptimizerName,
    OptimizerSpace,
    Sampling,
    describe,
    space_values,
)

if TYPE_CHECKING:  # keras-tuner imports TensorFlow, which config validation must not
    import keras_tuner

AUGMENTATIONS = ("rotation", "zoom", "translation", "contrast", "brightness")
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
    unless sgd or rmsprop can be chosen, weight decay unless adamw can.
    """
    m = cfg.model
    # In the order keras-tuner declares them: depth, kernel size, each block's filters.
    out: dict[str, Any] = {"model.depth": m.depth, "model.kernel_size": m.kernel_size}
    for block, space in enumerate(m.filters[: max(space_values(m.depth))]):
        out[f"model.filters.{block}"] = space
    for section in ("model", "augmentation", "optimizer"):
        node = getattr(cfg, section)
        for name, value in vars(node).items():
            if isinstance(value, (IntSpace, FloatSpace, OptimizerSpace)):
                out.setdefault(f"{section}.{name}", value)
    out["data.batch_size"] = cfg.data.batch_size
    if not any(n > 0 for n in space_values(cfg.model.dense_layers)):
        del out["model.dense_units"]  # no dense layer to size
    names = optimizer_names(cfg)
    for setting, users in OPTIMIZER_SETTINGS.items():
        if not users & set(names):
            del out[f"optimizer.{setting}"]
    return out


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

    depth: int
    kernel_size: int
    filters: list[int]  # one per block of this depth
    dense_layers: int
    dense_units: int | None
    dropout: float
    augmentation: dict[str, float]  # strength by name; 0 leaves the layer out
    optimizer: OptimizerName
    learning_rate: float
    momentum: float | None
    weight_decay: float | None


def draw(cfg: Any, hp: keras_tuner.HyperParameters) -> Drawn:
    """Declare the space on `hp` and return this trial's values. The order of the
    declarations is the order keras-tuner draws in: keep it, or the same seed draws
    other trials."""
    m = cfg.model
    depth = declare(hp, "model.depth", m.depth)
    kernel = declare(hp, "model.kernel_size", m.kernel_size)
    # Every block some depth could have is declared, so that keras-tuner sees the
    # conditional filters of the deeper blocks from the start.
    filters = [_filters(cfg, hp, block) for block in range(max(space_values(m.depth)))]
    dense_layers = declare(hp, "model.dense_layers", m.dense_layers)
    units = _dense_units(cfg, hp)
    dropout = declare(hp, "model.dropout", m.dropout)
    a = cfg.augmentation
    strength = {
        name: declare(hp, f"augmentation.{name}", getattr(a, name)) for name in AUGMENTATIONS
    }
    o = cfg.optimizer
    name = OptimizerName(declare(hp, "optimizer.name", o.name))
    lr = declare(hp, "optimizer.learning_rate", o.learning_rate)
    # Declared whatever the optimizer drawn, so keras-tuner sees both from the start.
    settings = {setting: _optimizer_setting(cfg, hp, setting) for setting in OPTIMIZER_SETTINGS}
    return Drawn(
        depth=depth,
        kernel_size=kernel,
        filters=filters[:depth],
        dense_layers=dense_layers,
        dense_units=units,
        dropout=dropout,
        augmentation=strength,
        optimizer=name,
        learning_rate=lr,
        momentum=settings["momentum"],
        weight_decay=settings["weight_decay"],
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
