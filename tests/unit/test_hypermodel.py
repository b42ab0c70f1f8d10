"""The searchable CNN: what keras-tuner sees of the config, and what it builds."""

from __future__ import annotations

import keras
import keras_tuner as kt
import pytest

from happysad.errors import ConfigError
from happysad.model.hypermodel import FaceHyperModel
from happysad.search.tuning import make_tuner
from tests.conftest import typed_config


def _tuner(overrides=()):
    cfg = typed_config(list(overrides))
    hypermodel = FaceHyperModel(cfg, (cfg.data.image_size, cfg.data.image_size, 1))
    # The real tuner: its oracle's space is what the search will draw from.
    return cfg, hypermodel, make_tuner(cfg, hypermodel, directory="kt", project_name="test")


def _space(overrides=()):
    cfg, hypermodel, tuner = _tuner(overrides)
    return cfg, hypermodel, {h.name: h for h in tuner.oracle.get_space().space}


def test_hyperparameters_carry_their_config_names():
    _, _, space = _space()
    assert {
        "model.depth",
        "model.filters.0",
        "model.kernel_size",
        "model.dense_units",
        "model.dropout",
        "optimizer.learning_rate",
        "augmentation.rotation",
        "data.batch_size",
    } <= space.keys()


def test_pin_choices_and_range_reach_keras_tuner():
    _, _, space = _space(
        [
            "model.depth.value=3",
            "model.filters.0.choices=[8,24]",
            "optimizer.learning_rate.max=0.05",
            "model.dense_units.choices=null",
            "model.dense_units.min=16",
            "model.dense_units.max=64",
            "model.dense_units.step=16",
        ]
    )
    assert isinstance(space["model.depth"], kt.engine.hyperparameters.Fixed)
    assert space["model.depth"].value == 3
    assert isinstance(space["model.filters.0"], kt.engine.hyperparameters.Choice)
    assert list(space["model.filters.0"].values) == [8, 24]
    lr = space["optimizer.learning_rate"]
    assert (lr.min_value, lr.max_value, lr.sampling) == (3e-4, 0.05, "log")
    units = space["model.dense_units"]
    assert isinstance(units, kt.engine.hyperparameters.Int)
    assert (units.min_value, units.max_value, units.step) == (16, 64, 16)


def test_deeper_blocks_are_conditional_on_depth():
    _, _, space = _space(
        ["model.depth.max=4", "model.filters=[{value:8},{value:8},{value:8},{value:8}]"]
    )
    assert not space["model.filters.1"].conditions
    (condition,) = space["model.filters.3"].conditions
    assert condition.name == "model.depth" and list(condition.values) == [4]


@pytest.mark.parametrize("seed", range(6))
def test_models_built_from_sampled_hyperparameters_end_in_one_sigmoid(seed):
    _, hypermodel, tuner = _tuner(
        [
            "optimizer=search",
            "augmentation=strong",
            "model.depth.max=4",
            "model.padding=same",
            f"seed={seed}",
        ]
    )
    hp = tuner.oracle.create_trial("t").hyperparameters
    model = hypermodel.build(hp)
    assert model.output_shape == (None, 1)
    last = model.layers[-1]
    assert isinstance(last, keras.layers.Dense) and last.units == 1
    assert last.activation is keras.activations.sigmoid
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == hp.get("model.depth")


def test_seed_model_is_the_tutorials_network():
    cfg = typed_config(["experiment=seed_baseline"])
    hypermodel = FaceHyperModel(cfg, (48, 48, 1))
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    assert hp.values["data.batch_size"] == 32
    model = hypermodel.build(hp)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer",
        "Rescaling",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 32, 16]
    assert all(c.kernel_size == (3, 3) and c.activation is keras.activations.relu for c in convs)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [256, 1]
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)


def test_an_architecture_too_deep_for_the_image_fails_with_a_reason():
    cfg = typed_config(["data.image_size=32", "model.depth.value=4", "model.kernel_size.value=5"])
    hypermodel = FaceHyperModel(cfg, (32, 32, 1))
    with pytest.raises(
        kt.errors.FailedTrialError, match="shrinks 32x32 images to nothing by block 3"
    ):
        hypermodel.build(kt.HyperParameters())
    # keras-tuner still discovers the whole space, so the search starts and the trial fails.
    tuner = make_tuner(cfg, hypermodel, directory="kt", project_name="misfit")
    names = {h.name for h in tuner.oracle.get_space().space}
    assert {"model.depth", "optimizer.learning_rate", "data.batch_size"} <= names


def test_momentum_is_searched_only_for_optimizers_that_use_it():
    assert "optimizer.momentum" not in _space(["optimizer=adam"])[2]
    _, _, space = _space(["optimizer=search"])
    (condition,) = space["optimizer.momentum"].conditions
    assert sorted(condition.values) == ["rmsprop", "sgd"]
    (condition,) = space["optimizer.weight_decay"].conditions
    assert list(condition.values) == ["adamw"]


def test_the_seed_fixes_the_sequence_of_trials():
    def first_trials(seed):
        _, _, tuner = _tuner([f"seed={seed}"])
        return [tuner.oracle.create_trial(f"tuner{i}").hyperparameters.values for i in range(4)]

    assert first_trials(7) == first_trials(7)
    assert first_trials(7) != first_trials(8)


def test_blocks_can_have_their_own_filter_spaces():
    _, _, space = _space(
        [
            "model.depth.choices=[2,3]",
            "model.filters=[{choices:[8,16]},{value:32},{choices:[64,128]}]",
        ]
    )
    assert list(space["model.filters.0"].values) == [8, 16]
    assert space["model.filters.1"].value == 32
    assert list(space["model.filters.2"].values) == [64, 128]
    (condition,) = space["model.filters.2"].conditions
    assert list(condition.values) == [3]


@pytest.mark.parametrize("tuner", ["random", "bayesian"])
def test_seed_zero_draws_the_same_trials_every_time(tmp_path, tuner):
    # keras-tuner takes seed 0 for "no seed"; happysad's seed=0 is a seed like any other.
    draws = []
    for run in ("a", "b"):
        cfg = typed_config(["seed=0", f"tuner={tuner}"])
        hypermodel = FaceHyperModel(cfg, (cfg.data.image_size, cfg.data.image_size, 1))
        tuner_ = make_tuner(cfg, hypermodel, directory=str(tmp_path / run), project_name="zero")
        draws.append([tuner_.oracle.create_trial(f"t{i}").hyperparameters.values for i in range(3)])
    assert draws[0] == draws[1]
    assert len({str(d) for d in draws[0]}) == 3


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model.dense_layers.value=0"],
        ["model.dense_layers.choices=[0,1]"],
        ["optimizer=search"],
        ["model=seed"],
    ],
)
def test_what_the_sweep_lists_is_what_keras_tuner_is_given(overrides):
    """One module decides the space: the names printed, logged and fingerprinted are
    the names declared to keras-tuner."""
    from happysad.config import search_space

    cfg = typed_config(overrides)
    hp = kt.HyperParameters()
    search_space.batch_size(cfg, hp)
    search_space.draw(cfg, hp)
    declared = [h.name for h in hp.space if h.name != "data.batch_size"]
    listed = [k for k in search_space.searchable(cfg) if k != "data.batch_size"]
    assert declared == listed


@pytest.mark.parametrize("seed", range(4))
def test_the_modern_family_builds_what_was_drawn(seed):
    """model=modern: every drawn block option is in the built network, and the
    first convolution stays plain."""
    cfg = typed_config(
        [
            "model=modern",
            "augmentation=strong",
            "optimizer.schedule.value=null",
            "optimizer.schedule.choices=[constant,cosine,plateau]",
            "optimizer.warmup_epochs.choices=[0,2]",
            "optimizer.label_smoothing.value=0.1",
            f"seed={seed}",
        ]
    )
    hypermodel = FaceHyperModel(cfg, (48, 48, 1), train_size=640)
    tuner = make_tuner(cfg, hypermodel, directory="kt", project_name=f"modern{seed}")
    hp = tuner.oracle.create_trial("t").hyperparameters
    values = hp.values
    model = hypermodel.build(hp)
    kinds = [type(layer).__name__ for layer in model.layers]
    depth, convs = values["model.depth"], values["model.convs_per_block"]
    separable = kinds.count("SeparableConv2D")
    assert kinds.index("Conv2D") < (kinds.index("SeparableConv2D") if separable else len(kinds))
    if values["model.conv"] == "separable":
        assert separable == depth * convs - 1
    else:
        assert separable == 0
    shortcuts = depth if values["model.residual"] else 0
    assert kinds.count("Add") == kinds.count("AveragePooling2D") == shortcuts
    assert kinds.count("Conv2D") == depth * convs - separable + shortcuts
    assert kinds.count("BatchNormalization") == depth * convs + shortcuts
    assert kinds.count("SpatialDropout2D") == (depth if values["model.block_dropout"] else 0)
    assert ("GlobalAveragePooling2D" if values["model.head"] == "average" else "Flatten") in kinds
    assert ("RandomErasing" in kinds) == (values["augmentation.erasing"] > 0)
    assert model.loss.label_smoothing == pytest.approx(0.1)
    schedule = values["optimizer.schedule"]
    rate = model.optimizer._learning_rate
    assert isinstance(rate, keras.optimizers.schedules.CosineDecay) == (schedule == "cosine")
    assert ("optimizer.warmup_epochs" in values) == (schedule == "cosine")
    assert model.output_shape == (None, 1)


def test_residual_shortcuts_need_same_padding():
    with pytest.raises(ConfigError, match="model.residual=true needs model.padding=same"):
        typed_config(["model=modern", "model.padding=valid"])
    # With valid padding the choice is not offered at all.
    from happysad.config import search_space

    cfg = typed_config(
        [
            "model=modern",
            "model.padding=valid",
            "model.residual.choices=null",
            "model.residual.value=false",
        ]
    )
    assert "model.residual" not in search_space.summary(cfg)


def test_the_cosine_schedule_warms_up_then_decays_over_the_trial():
    cfg = typed_config(
        [
            "optimizer.schedule.value=cosine",
            "optimizer.warmup_epochs.value=2",
            "optimizer.learning_rate.value=0.001",
            "data.batch_size.value=32",
            "tuner.epochs=10",
        ]
    )
    model = FaceHyperModel(cfg, (48, 48, 1), train_size=320).build(kt.HyperParameters())
    schedule = model.optimizer._learning_rate  # 10 steps an epoch
    rates = [float(schedule(step)) for step in (0, 10, 20, 60, 100)]
    assert rates[0] == 0 and rates[1] == pytest.approx(0.0005) and rates[2] == pytest.approx(0.001)
    assert rates[2] > rates[3] > rates[4] == pytest.approx(0.0)


def test_a_backbone_replaces_the_blocks_own_spaces():
    from happysad.config import search_space

    uri = "models:/happysad-backbone/1"
    cfg = typed_config(
        [
            "model=modern",
            "model.backbone.value=null",
            f"model.backbone.choices=[none,'{uri}']",
            "model.frozen_blocks.value=null",
            "model.frozen_blocks.choices=[0,2]",
            "optimizer.backbone_lr_scale.value=0.1",
        ]
    )
    hp = kt.HyperParameters()
    search_space.batch_size(cfg, hp)
    search_space.draw(cfg, hp)
    conditions = {h.name: [list(c.values) for c in h.conditions] for h in hp.space}
    assert conditions["model.depth"] == [["none"]] and conditions["model.conv"] == [["none"]]
    assert conditions["model.frozen_blocks"] == [[uri]]
    assert conditions["optimizer.backbone_lr_scale"] == [[uri]]
    assert conditions["model.head"] == []  # every model has its own head
    # Every trial on the backbone: the blocks' spaces are not searched at all.
    cfg = typed_config([f"model.backbone.value='{uri}'"])
    listed = search_space.searchable(cfg)
    assert "model.frozen_blocks" in listed and "model.depth" not in listed
    assert "model.filters.0" not in listed and "model.dropout" in listed
    # Without a backbone, its settings are not searched either.
    assert "model.frozen_blocks" not in search_space.searchable(typed_config())


def test_test_time_flip_averages_the_image_and_its_mirror_and_loads_as_plain_keras(tmp_path):
    import numpy as np

    from happysad.model.hypermodel import with_test_time_flip

    _, hypermodel, tuner = _tuner(["model.padding=same", "seed=3"])
    model = hypermodel.build(tuner.oracle.create_trial("t").hyperparameters)
    flipped = with_test_time_flip(model)
    x = np.random.default_rng(0).integers(0, 256, (6, *model.input_shape[1:])).astype("float32")
    mirror = x[:, :, ::-1, :]
    expected = (model.predict(x, verbose=0) + model.predict(mirror, verbose=0)) / 2
    np.testing.assert_allclose(flipped.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        flipped.predict(mirror, verbose=0), flipped.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert flipped.count_params() - model.count_params() == model.input_shape[2] ** 2
    path = tmp_path / "flipped.keras"
    flipped.save(path)
    loaded = keras.models.load_model(path)  # safe mode: no custom or Lambda layer in it
    np.testing.assert_allclose(loaded.predict(x, verbose=0), flipped.predict(x, verbose=0))


def _strided_shortcut_backbone(size: int, widths: tuple[int, ...]):
    """A backbone of residual blocks as happysad built them before shortcuts.py: a
    strided 1x1 convolution as each block's shortcut (what older backbones hold)."""
    from keras import layers

    pixels = keras.Input(shape=(size, size, 1), name="pixels")
    x = pixels
    for block, filters in enumerate(widths):
        name = f"block{block}"
        shortcut = x
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv0")(x)
        x = layers.MaxPooling2D(padding="same", name=f"{name}_pool")(x)
        shortcut = layers.Conv2D(
            filters, 1, strides=2, padding="same", use_bias=False, name=f"{name}_shortcut"
        )(shortcut)
        x = layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.Model(pixels, x, name="backbone")


@pytest.mark.parametrize("size", [12, 13])  # an odd side keeps its last row in both forms
def test_the_subsampled_shortcut_computes_what_the_strided_one_did(size, tmp_path):
    """The shortcut's safe form (1x1 average pooling with stride 2, then a stride-1 1x1
    convolution) gives the strided 1x1 convolution's outputs with the same weights, in a
    new model and in a backbone saved with the strided form, which loads and is rewritten.
    No training: the strided form's gradient is what crashes (shortcuts.py)."""
    import numpy as np

    from happysad.model import shortcuts, transfer

    old = _strided_shortcut_backbone(size, (4, 16))
    x = np.random.default_rng(size).random((5, size, size, 1)).astype("float32")
    expected = old.predict(x, verbose=0)

    # The form a new model is built with, given the old model's weights layer by layer.
    pixels = keras.Input(shape=(size, size, 1), name="pixels")
    y = pixels
    for block, filters in enumerate((4, 16)):
        name = f"block{block}"
        shortcut = y
        y = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", name=f"{name}_conv0"
        )(y)
        y = keras.layers.MaxPooling2D(padding="same", name=f"{name}_pool")(y)
        shortcut = shortcuts.subsampled(shortcut, filters, f"{name}_shortcut")
        y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    new = keras.Model(pixels, y)
    for layer in old.layers:
        new.get_layer(layer.name).set_weights(layer.get_weights())
    np.testing.assert_allclose(new.predict(x, verbose=0), expected, rtol=0, atol=1e-6)

    # A backbone saved with the strided form: loaded, frozen as asked, rewritten.
    path = tmp_path / "backbone.keras"
    old.save(path)
    backbone = transfer.Backbone(
        uri="models:/old/1",
        path=str(path),
        blocks=2,
        run_id="",
        data_digest="",
        input_shape=(size, size, 1),
    )
    loaded = transfer.load(backbone, frozen_blocks=1)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=0, atol=1e-6)
    convs = {c.name: c for c in loaded.layers if type(c) is keras.layers.Conv2D}
    assert all(tuple(conv.strides) == (1, 1) for conv in convs.values())
    assert isinstance(loaded.get_layer("block0_shortcut_subsample"), keras.layers.AveragePooling2D)
    assert not convs["block0_shortcut"].trainable and convs["block1_shortcut"].trainable
    assert [w.shape for w in loaded.weights] == [w.shape for w in old.weights]
