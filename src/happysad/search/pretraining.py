"""Pretraining a backbone (`python -m happysad.pretrain`, pretrain.py): one network of
the model family trained to tell apart the classes of a folder, recorded in MLflow and
its blocks registered for sweeps to start from.

It shares a search's start (TensorFlow's start-up lines in a log, the store opened by
the same rule and checks) and its model family (hypermodel's stem, blocks and head),
and keeps out of its training every image a sweep on `pretrain.hold_out.path` would
validate or test on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import keras
import keras_tuner
from keras import layers

from happysad.config import search_space
from happysad.config.duration import parse
from happysad.config.schema import Fer2013DataConfig, FolderDataConfig, PretrainConfig
from happysad.data import dataset as data_module
from happysad.errors import DataError
from happysad.model import hypermodel, transfer
from happysad.results import evaluation, plots
from happysad.search import startup, training
from happysad.search.preflight import open_store
from happysad.tracking import names, registry
from happysad.tracking.models import log_backbone
from happysad.tracking.runs import (
    create_run,
    environment_tags,
    image_dataset,
    log_dataset,
    log_metrics,
    log_params,
    set_tags,
)
from happysad.tracking.store import without_credentials

log = logging.getLogger("happysad")


@dataclass
class PretrainResult:
    run_id: str
    model_uri: str  # the logged backbone
    registered_uri: str  # models:/<name>/<version>
    version: str
    metrics: dict[str, float]
    epochs: int
    seconds: float


def run(
    cfg: PretrainConfig,
    space: dict[str, str],
    startup_log: Path,
    config_yaml: str = "",
    on_run: Callable[[str, str], None] | None = None,
) -> PretrainResult:
    """Train, record and register the backbone of a checked config (`space`: its
    pinned spaces as text); TensorFlow's start-up lines go to `startup_log`, recorded on
    the run; `on_run(store_uri, run_id)` is told the run once it exists. Raises a
    HappysadError the user can act on."""
    devices = startup.start_tensorflow(startup_log, trial_server=None)
    started = time.monotonic()
    images = data_module.load_classes(cfg.data)
    held = hold_out(cfg, images)
    classes = images.class_names
    counts = images.train.counts(classes)
    log.info(
        f"data: {images.path} ({len(classes)} classes, digest {images.digest}): train "
        f"{len(images.train)} ({', '.join(f'{k} {v}' for k, v in counts.items())}), "
        f"validation {len(images.val)}"
    )
    store = open_store(cfg.mlflow.tracking_uri)
    experiment_id = store.open_experiment(cfg.mlflow.experiment)
    log.info(devices)
    log.info(f"MLflow store: {store.uri} (experiment '{cfg.mlflow.experiment}')")

    hp = keras_tuner.HyperParameters()
    batch_size = search_space.batch_size(cfg, hp)
    drawn = search_space.draw(cfg, hp)
    keras.utils.set_random_seed(cfg.seed)
    model = classifier(cfg, drawn, images.input_shape, len(classes), len(images.train), batch_size)

    name = f"pretrain-{Path(images.path).parent.name}-{datetime.now():%Y%m%d-%H%M%S}"
    summary = images.summary()
    run_id = create_run(
        store,
        experiment_id,
        name,
        {
            **environment_tags(),
            names.ROLE: names.ROLE_BACKBONE,
            names.DATA_DIGEST: images.digest,
        },
    )
    if on_run is not None:
        on_run(store.uri, run_id)
    status, reason = names.FAILED, None
    try:
        log_params(
            store,
            run_id,
            {
                **{k: v for k, v in hp.values.items()},
                **{f"pretrain.{k}": v for k, v in vars(cfg.pretrain).items() if k != "hold_out"},
                **{f"data.{k}": v for k, v in summary.items()},
                "data.classes": ",".join(classes),
                "seed": cfg.seed,
                **{f"pretrain.hold_out.{k}": v for k, v in held.items()},
            },
        )
        log_dataset(store, run_id, image_dataset(summary))
        store.client.log_dict(run_id, space, "config/search_space.json")
        if config_yaml:
            # No URI in the recorded config carries a password.
            store.client.log_text(run_id, without_credentials(config_yaml), "config/config.yaml")

        def report(epoch: int, metrics: dict[str, float], seconds: float) -> None:
            log_metrics(store, run_id, {**metrics, "epoch_time": seconds}, step=epoch)
            shown = "  ".join(
                f"{k} {metrics[k]:.4f}"
                for k in ("loss", "accuracy", "val_accuracy", "val_balanced_accuracy")
                if k in metrics
            )
            log.info(f"  epoch {epoch + 1}/{cfg.pretrain.epochs}  {shown}  ({seconds:.1f} s)")

        history = fit(cfg, model, drawn, images, batch_size, report)
        confusion = val_confusion(model, images)
        recall = evaluation.class_recall(confusion)
        metrics = {
            "val_balanced_accuracy": evaluation.balanced_accuracy(confusion),
            "val_accuracy": float(confusion.trace() / confusion.sum()),
            "best_epoch": float(history.best_epoch),
            **{f"val_recall_{c}": float(r) for c, r in zip(classes, recall, strict=True)},
        }
        log_metrics(store, run_id, metrics, step=len(history.epochs))
        store.client.log_figure(
            run_id,
            plots.confusion_matrix(confusion, classes, "validation (best epoch)"),
            "plots/val_confusion_matrix.png",
        )
        backbone = model.get_layer(transfer.BACKBONE)
        # Every image it saw (train, and validation, which chose its epoch), for the
        # sweeps' check that their validation and test images are not among them.
        seen = sorted(set(images.train.digests()) | set(images.val.digests()))
        store.client.log_text(run_id, "\n".join(seen) + "\n", transfer.SEEN_IMAGES)
        metadata = {
            "input_shape": list(images.input_shape),
            "preprocessing": images.preprocessing.to_dict(),
            "blocks": drawn.depth,
            "classes": list(classes),
            "data_digest": images.digest,
            "data_path": images.path,
            "run_id": run_id,
            "seen_images": transfer.SEEN_IMAGES,
            "held_out": held,
            "model": {k: v for k, v in hp.values.items() if k.startswith("model.")},
        }
        model_uri = log_backbone(store, run_id, backbone, metadata)
        tags = {
            names.SOURCE_RUN_ID: run_id,
            names.DATA_DIGEST: images.digest,
            **{names.TEST + k: f"{v:.6g}" for k, v in metrics.items() if k.startswith("val_")},
        }
        version = registry.register(store, cfg.pretrain.model_name, model_uri, tags)
        if history.stopped_by_budget:
            set_tags(store, run_id, {names.BUDGET: "the time budget stopped the training"})
        status = names.FINISHED
    except KeyboardInterrupt:
        status, reason = names.KILLED, "stopped by the user (Ctrl-C or SIGTERM)"
        raise
    except BaseException as err:
        reason = f"{type(err).__name__}: {err}"
        raise
    finally:
        if reason:
            set_tags(store, run_id, {names.NOTE: without_credentials(reason)})
        # The start-up log and what else its folder holds (the training's error output).
        for file in sorted(startup_log.parent.iterdir()):
            if file.is_file() and file.stat().st_size:
                store.client.log_artifact(run_id, str(file), "logs")
        store.client.set_terminated(run_id, status)
    registered = f"models:/{cfg.pretrain.model_name}/{version}"
    return PretrainResult(
        run_id=run_id,
        model_uri=model_uri,
        registered_uri=registered,
        version=version,
        metrics=metrics,
        epochs=len(history.epochs),
        seconds=time.monotonic() - started,
    )


def hold_out(cfg: PretrainConfig, images) -> dict[str, Any]:
    """Leave out of `images` (in place) every image whose pixels are in the validation
    or test split of `pretrain.hold_out.path` as a sweep splits it; what was held out."""
    h = cfg.pretrain.hold_out
    if not h.path:
        return {}
    # The pretraining's own data settings (preprocessing above all), on the sweep's
    # data with the sweep's split.
    kind = Fer2013DataConfig if Path(h.path).expanduser().is_file() else FolderDataConfig
    settings = {f.name: getattr(cfg.data, f.name) for f in fields(FolderDataConfig)}
    del settings["source"]  # each kind of data names its own
    sweep_data = data_module.load(
        kind(
            **settings
            | {
                "path": h.path,
                "seed": h.seed,
                "val_fraction": h.val_fraction,
                "test_fraction": h.test_fraction,
            }
        )
    )
    held = set(sweep_data.val.digests()) | set(sweep_data.test.digests())
    before = len(images.train) + len(images.val)
    images.train, images.val = images.train.without(held), images.val.without(held)
    if not len(images.train) or not len(images.val):
        raise DataError(
            f"pretrain.hold_out.path={h.path}: holding out its validation and test images "
            f"leaves {len(images.train)} training and {len(images.val)} validation images: "
            "pretrain on a folder with other images too"
        )
    if images.class_weight is not None:
        images.class_weight = data_module.balanced_weights(images.train.y, len(images.class_names))
    images.digest = data_module.content_digest(
        {"train": images.train, "val": images.val, "test": images.test}
    )
    removed = before - len(images.train) - len(images.val)
    log.info(
        f"held out {removed} images that are among the {len(held)} validation and test "
        f"images of {h.path} (data.seed={h.seed}, data.val_fraction={h.val_fraction})"
    )
    return {
        "path": str(Path(h.path).expanduser().resolve()),
        "seed": h.seed,
        "val_fraction": h.val_fraction,
        "test_fraction": h.test_fraction,
        "digest": sweep_data.digest,
        "images": removed,
    }


def classifier(cfg, drawn, input_shape, classes: int, train_size: int, batch_size: int):
    """Pixels -> rescaling -> augmentation -> the backbone (the drawn blocks, a Keras
    model of its own) -> the drawn head -> softmax over the classes."""
    pixels = keras.Input(shape=input_shape, name="pixels")  # 0-1, rescaled
    backbone = keras.Model(
        pixels, hypermodel.blocks(pixels, drawn, cfg.model.padding.value), name=transfer.BACKBONE
    )
    inputs, x = hypermodel.stem(cfg, drawn, input_shape)
    x = hypermodel.head(backbone(x), drawn)
    outputs = layers.Dense(classes, activation="softmax", name="classes")(x)
    model = keras.Model(inputs, outputs, name="happysad_pretrain")
    model.compile(
        optimizer=hypermodel.optimizer_for(
            drawn, -(-train_size // batch_size), cfg.pretrain.epochs
        ),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=drawn.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


def val_confusion(model, images):
    """The model's confusion matrix on the validation split (true class by row)."""
    predicted = model.predict(images.val.x, batch_size=256, verbose=0).argmax(axis=1)
    return evaluation.class_confusion(images.val.y, predicted, len(images.class_names))


@dataclass
class FitHistory:
    epochs: list[int]
    best_epoch: int
    stopped_by_budget: bool


def fit(cfg: PretrainConfig, model, drawn, images, batch_size: int, report) -> FitHistory:
    """Train with the balanced accuracy on validation computed each epoch (early
    stopping watches it), the time budget, and the best epoch's weights kept."""
    import tensorflow as tf

    classes = len(images.class_names)

    def dataset(split, shuffle: bool):
        ds = tf.data.Dataset.from_tensor_slices((split.x, tf.one_hot(split.y.astype(int), classes)))
        if shuffle:
            ds = ds.shuffle(len(split), seed=cfg.seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    class Balanced(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            logs["val_balanced_accuracy"] = evaluation.balanced_accuracy(
                val_confusion(self.model, images)
            )
            report(epoch, {k: float(v) for k, v in logs.items()}, time.monotonic() - self._started)

    p = cfg.pretrain
    stop = keras.callbacks.EarlyStopping(
        monitor="val_balanced_accuracy",
        mode="max",
        patience=p.early_stopping_patience or p.epochs + 1,
        restore_best_weights=True,
    )
    callbacks = [
        Balanced(),
        *hypermodel.schedule_callbacks(drawn, "val_balanced_accuracy", "max"),
        stop,
    ]
    deadline = None
    if p.time_budget:
        deadline = training.Deadline(time.time() + parse(p.time_budget, "pretrain.time_budget"))
        callbacks.append(deadline)
    fitted = model.fit(
        dataset(images.train, shuffle=True),
        validation_data=dataset(images.val, shuffle=False),
        epochs=p.epochs,
        callbacks=callbacks,
        class_weight=images.class_weight,
        shuffle=False,  # the pipeline shuffles
        verbose=0,
    )
    return FitHistory(
        epochs=list(fitted.epoch),
        best_epoch=int(stop.best_epoch),
        stopped_by_budget=bool(deadline and deadline.stopped),
    )
