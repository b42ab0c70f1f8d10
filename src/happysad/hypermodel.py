"""The searchable CNN: structure in code, ranges from config.

Every hyperparameter is declared under its public name (`model.depth`,
`optimizer.learning_rate`, ...), the same name as in the YAML and in MLflow.
Per-block filters are `model.filters_1`, `model.filters_2`, ..., each drawn from
the `model.filters` space and active only when the network has that block.
"""

from __future__ import annotations

import contextlib
import math
from enum import Enum
from typing import Any

import keras
import keras_tuner
from keras import layers

from happysad import architecture
from happysad.config import Config, IntSpace, OptimizerName, Sampling, space_values
from happysad.data import ImageData, to_dataset


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


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Fail the trial, with the reason, the moment the loss stops being a number.

    Keras' TerminateOnNaN only stops training and leaves keras-tuner a NaN score to
    retry; a FailedTrialError ends the trial as FAILED and the search goes on."""

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            raise keras_tuner.errors.FailedTrialError(
                f"the loss became {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1}: "
                f"optimizer.learning_rate={lr:g} is likely too high for this model"
            )


class FaceHyperModel(keras_tuner.HyperModel):
    """Conv2D + ReLU + MaxPooling2D blocks, Flatten, Dense layers, one sigmoid unit."""

    def __init__(self, cfg: Config, input_shape: tuple[int, int, int]):
        super().__init__(name="happysad")
        self.cfg = cfg
        self.input_shape = input_shape
        self._discovering = False

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        # Declared in fit(); declared here too, or the first trial would not search it.
        declare(hp, "data.batch_size", self.cfg.data.batch_size)

    @contextlib.contextmanager
    def discovering(self):
        """While keras-tuner discovers the space (it builds models with default and
        condition-activating values), an architecture that does not fit the images
        is skipped instead of failing: only a trial that draws it fails."""
        self._discovering = True
        try:
            yield
        finally:
            self._discovering = False

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        # The same seed for every trial: two trials differ by their hyperparameters only.
        keras.utils.set_random_seed(self.cfg.seed)
        m = self.cfg.model
        depth = declare(hp, "model.depth", m.depth)
        kernel = declare(hp, "model.kernel_size", m.kernel_size)
        # Every block some depth could have is visited, so that keras-tuner sees the
        # conditional filters of the deeper blocks from the start.
        filters = [self._filters(hp, block) for block in range(1, max(space_values(m.depth)) + 1)][
            :depth
        ]
        dense_layers = declare(hp, "model.dense_layers", m.dense_layers)
        units = self._dense_units(hp)
        dropout = declare(hp, "model.dropout", m.dropout)
        augmentation = self._augmentation(hp)
        optimizer = self._optimizer(hp)
        misfit = architecture.misfit(self.input_shape[0], depth, kernel, m.padding)
        if misfit and self._discovering:
            return None  # every hyperparameter is declared; nothing to build
        if misfit:
            raise keras_tuner.errors.FailedTrialError(misfit)

        inputs = keras.Input(shape=self.input_shape, name="image")
        x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
        for layer in augmentation:
            x = layer(x)
        for count in filters:
            x = layers.Conv2D(count, kernel, padding=m.padding.value, activation="relu")(x)
            x = layers.MaxPooling2D()(x)
        x = layers.Flatten()(x)
        for _ in range(dense_layers):
            x = layers.Dense(units, activation="relu")(x)
            if dropout > 0:
                x = layers.Dropout(dropout)(x)
        if dense_layers == 0 and dropout > 0:
            x = layers.Dropout(dropout)(x)
        outputs = layers.Dense(1, activation="sigmoid", name="happy")(x)
        model = keras.Model(inputs, outputs, name="happysad_cnn")
        model.compile(
            optimizer=optimizer,
            loss="binary_crossentropy",
            metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
        )
        return model

    def fit(self, hp, model, data: ImageData, callbacks=None, epochs=None, **kwargs):
        batch_size = declare(hp, "data.batch_size", self.cfg.data.batch_size)
        tuner = self.cfg.tuner
        objective = tuner.objective.value
        patience = tuner.early_stopping_patience or tuner.epochs + 1
        # Early stopping on the objective, and in any case the best epoch's weights
        # at the end: the model kept is the one whose score keras-tuner records.
        stop = keras.callbacks.EarlyStopping(
            monitor=objective,
            mode=tuner.objective.direction,
            patience=patience,
            restore_best_weights=True,
        )
        return model.fit(
            to_dataset(data.train, batch_size, shuffle=True, seed=self.cfg.seed),
            validation_data=to_dataset(data.val, batch_size, shuffle=False, seed=self.cfg.seed),
            epochs=epochs or tuner.epochs,
            callbacks=[*(callbacks or []), StopOnNonFiniteLoss(), stop],
            class_weight=data.class_weight,
            shuffle=False,  # the pipeline shuffles
            **{"verbose": 0, **kwargs},
        )

    def _filters(self, hp, block: int) -> int | None:
        """Filters of one block; None when the drawn depth has no such block."""
        m = self.cfg.model
        name = f"model.filters_{block}"
        space = m.filters if m.filters_per_block is None else m.filters_per_block[block - 1]
        depths = space_values(m.depth)
        if block <= min(depths):
            return declare(hp, name, space)
        with hp.conditional_scope("model.depth", [d for d in depths if d >= block]):
            return declare(hp, name, space)

    def _dense_units(self, hp) -> int | None:
        """Units of the dense layers, searched only when there are dense layers."""
        m = self.cfg.model
        with_layers = [n for n in space_values(m.dense_layers) if n > 0]
        if not with_layers:
            return None
        if len(with_layers) == len(space_values(m.dense_layers)):
            return declare(hp, "model.dense_units", m.dense_units)
        with hp.conditional_scope("model.dense_layers", with_layers):
            return declare(hp, "model.dense_units", m.dense_units)

    def _augmentation(self, hp) -> list[layers.Layer]:
        """Keras preprocessing layers, active in training only; strength 0 leaves one out."""
        a = self.cfg.augmentation
        seed = self.cfg.seed
        strength = {
            name: declare(hp, f"augmentation.{name}", getattr(a, name))
            for name in ("rotation", "zoom", "translation", "contrast", "brightness")
        }
        stack = [layers.RandomFlip("horizontal", seed=seed)] if a.flip else []
        if strength["rotation"] > 0:
            stack.append(
                layers.RandomRotation(strength["rotation"], fill_mode="reflect", seed=seed)
            )
        if strength["zoom"] > 0:
            stack.append(layers.RandomZoom(strength["zoom"], fill_mode="reflect", seed=seed))
        if strength["translation"] > 0:
            t = strength["translation"]
            stack.append(layers.RandomTranslation(t, t, fill_mode="reflect", seed=seed))
        if strength["contrast"] > 0:
            stack.append(layers.RandomContrast(strength["contrast"], value_range=(0, 1), seed=seed))
        if strength["brightness"] > 0:
            stack.append(
                layers.RandomBrightness(strength["brightness"], value_range=(0, 1), seed=seed)
            )
        return stack

    def _optimizer(self, hp) -> keras.optimizers.Optimizer:
        o = self.cfg.optimizer
        name = OptimizerName(declare(hp, "optimizer.name", o.name))
        lr = declare(hp, "optimizer.learning_rate", o.learning_rate)
        # Declared whatever the optimizer drawn, so keras-tuner sees both from the start.
        momentum = self._setting(hp, "momentum", {OptimizerName.sgd, OptimizerName.rmsprop})
        weight_decay = self._setting(hp, "weight_decay", {OptimizerName.adamw})
        if name is OptimizerName.adam:
            return keras.optimizers.Adam(lr)
        if name is OptimizerName.adamw:
            return keras.optimizers.AdamW(lr, weight_decay=weight_decay)
        if name is OptimizerName.sgd:
            return keras.optimizers.SGD(lr, momentum=momentum)
        return keras.optimizers.RMSprop(lr, momentum=momentum)

    def _setting(self, hp, field: str, used_by: set[OptimizerName]) -> float | None:
        """An optimizer setting, searched only while an optimizer that uses it is drawn."""
        names = space_values(self.cfg.optimizer.name)
        users = [n.value for n in names if n in used_by]
        if not users:
            return None
        space = getattr(self.cfg.optimizer, field)
        if len(names) == 1:
            return declare(hp, f"optimizer.{field}", space)
        with hp.conditional_scope("optimizer.name", users):
            return declare(hp, f"optimizer.{field}", space)
