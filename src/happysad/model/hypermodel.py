"""The searchable CNN: structure in code, ranges from config.

What is searched, under which names and conditions, is search_space.py's to decide;
this module builds the layers from the values drawn there.
"""

from __future__ import annotations

import contextlib
import math

import keras
import keras_tuner
import numpy as np
from keras import layers

from happysad.config import search_space
from happysad.config.schema import NO_BACKBONE, Config, Conv, Head, OptimizerName, Schedule
from happysad.data.dataset import ImageData, to_dataset
from happysad.model import architecture, shortcuts, transfer


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
    """Blocks of convolutions and max pooling, a head, Dense layers, one sigmoid unit.

    With every option off it is the seed's family: Conv2D + ReLU + MaxPooling2D blocks,
    Flatten, Dense. The options are those of strong face models (mini-Xception and
    the like): several convolutions per block, depthwise-separable convolutions, batch
    normalisation, residual shortcuts, spatial dropout, global average pooling, label
    smoothing and a learning-rate schedule."""

    def __init__(
        self,
        cfg: Config,
        input_shape: tuple[int, int, int],
        train_size: int = 0,
        backbones: dict[str, transfer.Backbone] | None = None,
    ):
        super().__init__(name="happysad")
        self.cfg = cfg
        self.input_shape = input_shape
        self.train_size = train_size  # images per epoch: the cosine schedule's length
        self.backbones = backbones or {}  # by URI, fetched and checked (transfer.prepare)
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
        backbone = None
        if drawn.backbone != NO_BACKBONE:
            if self._discovering:
                return None  # the backbones are fetched once the search starts
            backbone = transfer.load(self.backbones[drawn.backbone], drawn.frozen_blocks)
        misfit = backbone is None and architecture.misfit(
            self.input_shape[0],
            drawn.depth,
            drawn.kernel_size,
            m.padding,
            drawn.convs_per_block,
            drawn.residual,
        )
        if misfit and self._discovering:
            return None  # every hyperparameter is declared; nothing to build
        if misfit:
            raise keras_tuner.errors.FailedTrialError(misfit)
        inputs, x = stem(self.cfg, drawn, self.input_shape)
        x = blocks(x, drawn, m.padding.value) if backbone is None else backbone(x)
        x = head(x, drawn)
        outputs = layers.Dense(1, activation="sigmoid", name="happy")(x)
        model = keras.Model(inputs, outputs, name="happysad_cnn")
        per_epoch = math.ceil(self.train_size / search_space.batch_size(self.cfg, hp))
        optimizer = optimizer_for(drawn, per_epoch, self.cfg.tuner.epochs)
        if backbone is not None:
            optimizer = transfer.scaled(
                optimizer, backbone.trainable_variables, drawn.backbone_lr_scale
            )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.BinaryCrossentropy(label_smoothing=drawn.label_smoothing),
            metrics=_metrics(),
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
        extra = schedule_callbacks(
            search_space.draw(self.cfg, hp), objective, tuner.objective.direction
        )
        return model.fit(
            to_dataset(data.train, batch_size, shuffle=True, seed=self.cfg.seed),
            validation_data=to_dataset(data.val, batch_size, shuffle=False, seed=self.cfg.seed),
            epochs=epochs or tuner.epochs,
            callbacks=[*(callbacks or []), StopOnNonFiniteLoss(), *extra, stop],
            class_weight=data.class_weight,
            shuffle=False,  # the pipeline shuffles
            **{"verbose": 0, **kwargs},
        )


def schedule_callbacks(drawn: search_space.Drawn, monitor: str, mode: str) -> list:
    """The plateau schedule's callback when it is drawn: the learning rate halved when
    `monitor` has not improved for 2 epochs."""
    if drawn.schedule is not Schedule.plateau:
        return []
    return [keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5, patience=2)]


def _metrics() -> list:
    return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]


def portable(model) -> None:
    """Compile the model again with its optimizer's own Keras class if its backbone's
    learning rate was scaled (transfer.scaled): the saved model then loads without
    happysad. The weights are untouched."""
    base = getattr(model.optimizer, "plain_class", None)
    if base is not None:
        model.compile(
            optimizer=base.from_config(model.optimizer.get_config()),
            loss=model.loss,
            metrics=_metrics(),
        )
        # Built, so that the saved model's optimizer has the variables a load expects.
        model.optimizer.build(model.trainable_variables)


def with_test_time_flip(model):
    """`model` whose prediction is the mean of its predictions on the image and on its
    mirror image. The mirror is a fixed Dense layer over the width (an anti-diagonal
    identity), so the saved model is plain Keras and loads without happysad."""
    height, width, channels = model.input_shape[1:]
    inputs = keras.Input(shape=(height, width, channels), name="image")
    across = layers.Permute((1, 3, 2), name="width_last")(inputs)
    mirror = layers.Dense(width, use_bias=False, trainable=False, name="mirror")
    mirrored = layers.Permute((1, 3, 2), name="width_back")(mirror(across))
    mirror.set_weights([np.eye(width, dtype="float32")[::-1]])
    outputs = layers.Average(name="test_time_flip")([model(inputs), model(mirrored)])
    flipped = keras.Model(inputs, outputs, name=f"{model.name}_flip")
    # Compiled like the model (a fresh optimizer of its settings, built so that the
    # saved model loads without warnings); only its predictions are used.
    optimizer = type(model.optimizer).from_config(model.optimizer.get_config())
    flipped.compile(optimizer=optimizer, loss=model.loss, metrics=_metrics())
    flipped.optimizer.build(flipped.trainable_variables)
    return flipped


def stem(cfg: Config, drawn: search_space.Drawn, input_shape: tuple):
    """The model's input (uint8 pixels), rescaled to 0-1 and augmented in training."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for layer in augmentation_layers(cfg, drawn.augmentation):
        x = layer(x)
    return inputs, x


def head(x, drawn: search_space.Drawn):
    """Feature maps to one vector (Flatten or global average pooling), then the dense
    layers, each with dropout (or dropout alone when there is none)."""
    if drawn.head is Head.average:
        x = layers.GlobalAveragePooling2D(name="average")(x)
    else:
        x = layers.Flatten()(x)
    for _ in range(drawn.dense_layers):
        x = layers.Dense(drawn.dense_units, activation="relu")(x)
        if drawn.dropout > 0:
            x = layers.Dropout(drawn.dropout)(x)
    if drawn.dense_layers == 0 and drawn.dropout > 0:
        x = layers.Dropout(drawn.dropout)(x)
    return x


def blocks(x, drawn: search_space.Drawn, padding: str):
    """The drawn conv blocks on `x`; block i's layers are named `block{i}_...`."""
    for block, count in enumerate(drawn.filters):
        x = _block(x, block, count, drawn, padding)
    return x


def _block(x, block: int, filters: int, drawn: search_space.Drawn, padding: str):
    """One block: convolutions (+ batch norm) + ReLU, 2x2 max pooling, and the
    shortcut and spatial dropout when drawn."""
    name = f"block{block}"
    shortcut = x
    for i in range(drawn.convs_per_block):
        # The network's first convolution is always plain: a separable one on a
        # grayscale image would have a single spatial filter.
        separable = drawn.conv is Conv.separable and (block, i) != (0, 0)
        conv = layers.SeparableConv2D if separable else layers.Conv2D
        if drawn.batch_norm:
            x = conv(
                filters, drawn.kernel_size, padding=padding, use_bias=False, name=f"{name}_conv{i}"
            )(x)
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
            x = layers.ReLU(name=f"{name}_relu{i}")(x)
        else:  # the seed's own layer
            x = conv(
                filters,
                drawn.kernel_size,
                padding=padding,
                activation="relu",
                name=f"{name}_conv{i}",
            )(x)
    # "same" pooling keeps an odd side's last row, as the strided shortcut does.
    x = layers.MaxPooling2D(padding="same" if drawn.residual else "valid", name=f"{name}_pool")(x)
    if drawn.residual:
        # Subsampled, then a 1x1 convolution: a strided 1x1 convolution computes the
        # same but crashes oneDNN's backward pass on few channels (shortcuts.py).
        shortcut = shortcuts.subsampled(shortcut, filters, f"{name}_shortcut")
        if drawn.batch_norm:
            shortcut = layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
        x = layers.Add(name=f"{name}_add")([x, shortcut])
    if drawn.block_dropout > 0:
        x = layers.SpatialDropout2D(drawn.block_dropout, name=f"{name}_dropout")(x)
    return x


def augmentation_layers(cfg: Config, strength: dict[str, float]) -> list[layers.Layer]:
    """Keras preprocessing layers, active in training only; strength 0 leaves one out."""
    a = cfg.augmentation
    seed = cfg.seed
    stack = [layers.RandomFlip("horizontal", seed=seed)] if a.flip else []
    if strength["rotation"] > 0:
        stack.append(layers.RandomRotation(strength["rotation"], fill_mode="reflect", seed=seed))
    if strength["zoom"] > 0:
        stack.append(layers.RandomZoom(strength["zoom"], fill_mode="reflect", seed=seed))
    if strength["translation"] > 0:
        t = strength["translation"]
        stack.append(layers.RandomTranslation(t, t, fill_mode="reflect", seed=seed))
    if strength["contrast"] > 0:
        stack.append(layers.RandomContrast(strength["contrast"], value_range=(0, 1), seed=seed))
    if strength["brightness"] > 0:
        stack.append(layers.RandomBrightness(strength["brightness"], value_range=(0, 1), seed=seed))
    if strength["erasing"] > 0:
        stack.append(
            layers.RandomErasing(
                strength["erasing"], scale=(0.02, 0.2), value_range=(0, 1), seed=seed
            )
        )
    return stack


def optimizer_for(
    drawn: search_space.Drawn, steps_per_epoch: int, epochs: int
) -> keras.optimizers.Optimizer:
    """The drawn optimizer at the drawn learning rate, on the cosine schedule (over
    `epochs` of `steps_per_epoch`) when that is drawn."""
    lr = drawn.learning_rate
    if drawn.schedule is Schedule.cosine:
        # From 0 up to the drawn rate over the warm-up, then down to 0.
        if not steps_per_epoch:
            raise ValueError("the cosine schedule needs the number of training images")
        warmup, total = drawn.warmup_epochs * steps_per_epoch, epochs * steps_per_epoch
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else lr,
            decay_steps=max(1, total - warmup),
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    if drawn.optimizer is OptimizerName.adam:
        return keras.optimizers.Adam(lr)
    if drawn.optimizer is OptimizerName.adamw:
        return keras.optimizers.AdamW(lr, weight_decay=drawn.weight_decay)
    if drawn.optimizer is OptimizerName.sgd:
        return keras.optimizers.SGD(lr, momentum=drawn.momentum)
    return keras.optimizers.RMSprop(lr, momentum=drawn.momentum)
