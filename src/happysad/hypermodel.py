"""The searchable CNN: structure in code, ranges from config.

What is searched, under which names and conditions, is search_space.py's to decide;
this module builds the layers from the values drawn there.
"""

from __future__ import annotations

import contextlib
import math

import keras
import keras_tuner
from keras import layers

from happysad import architecture, search_space
from happysad.config import Config, OptimizerName
from happysad.data import ImageData, to_dataset


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
        search_space.batch_size(self.cfg, hp)

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
        drawn = search_space.draw(self.cfg, hp)
        misfit = architecture.misfit(self.input_shape[0], drawn.depth, drawn.kernel_size, m.padding)
        if misfit and self._discovering:
            return None  # every hyperparameter is declared; nothing to build
        if misfit:
            raise keras_tuner.errors.FailedTrialError(misfit)
        inputs = keras.Input(shape=self.input_shape, name="image")
        x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
        for layer in self._augmentation(drawn.augmentation):
            x = layer(x)
        for count in drawn.filters:
            x = layers.Conv2D(count, drawn.kernel_size, padding=m.padding.value, activation="relu")(
                x
            )
            x = layers.MaxPooling2D()(x)
        x = layers.Flatten()(x)
        for _ in range(drawn.dense_layers):
            x = layers.Dense(drawn.dense_units, activation="relu")(x)
            if drawn.dropout > 0:
                x = layers.Dropout(drawn.dropout)(x)
        if drawn.dense_layers == 0 and drawn.dropout > 0:
            x = layers.Dropout(drawn.dropout)(x)
        outputs = layers.Dense(1, activation="sigmoid", name="happy")(x)
        model = keras.Model(inputs, outputs, name="happysad_cnn")
        model.compile(
            optimizer=_optimizer(drawn),
            loss="binary_crossentropy",
            metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
        )
        return model

    def fit(self, hp, model, data: ImageData, callbacks=None, epochs=None, **kwargs):
        batch_size = search_space.batch_size(self.cfg, hp)
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

    def _augmentation(self, strength: dict[str, float]) -> list[layers.Layer]:
        """Keras preprocessing layers, active in training only; strength 0 leaves one out."""
        a = self.cfg.augmentation
        seed = self.cfg.seed
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


def _optimizer(drawn: search_space.Drawn) -> keras.optimizers.Optimizer:
    lr = drawn.learning_rate
    if drawn.optimizer is OptimizerName.adam:
        return keras.optimizers.Adam(lr)
    if drawn.optimizer is OptimizerName.adamw:
        return keras.optimizers.AdamW(lr, weight_decay=drawn.weight_decay)
    if drawn.optimizer is OptimizerName.sgd:
        return keras.optimizers.SGD(lr, momentum=drawn.momentum)
    return keras.optimizers.RMSprop(lr, momentum=drawn.momentum)
