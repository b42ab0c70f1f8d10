"""Composition: every group and preset composes; typos and wrong types are refused."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from happysad.config.composition import config_dir, experiments_dir
from happysad.config.schema import FloatSpace, IntSpace, Sampling, describe
from happysad.config.search_space import searchable
from happysad.errors import ConfigError
from tests.conftest import compose_config, typed_config

GROUPS = ["data", "model", "augmentation", "optimizer", "tuner", "mlflow", "debug"]
NEEDS = {
    "data=folder": ["data.path=/somewhere"],
    "data=fer2013": ["data.path=/data/fer2013.csv"],
    "experiment=fer2013": ["data.path=/data/fer2013"],
    "experiment=fer2013_cnn": ["data.path=/data/fer2013"],
    "experiment=fer2013_long": ["data.path=/data/fer2013"],
    "mlflow=server": ["mlflow.tracking_uri=http://x:5000"],
}


def _options():
    for group in GROUPS:
        for path in sorted((config_dir() / group).glob("*.yaml")):
            yield f"{group}={path.stem}"


@pytest.mark.parametrize("option", list(_options()))
def test_every_group_option_composes_and_validates(option):
    cfg = typed_config([option, *NEEDS.get(option, [])])
    assert searchable(cfg)


@pytest.mark.parametrize("preset", sorted(p.stem for p in experiments_dir().glob("*.yaml")))
def test_every_experiment_composes_and_has_a_note(preset):
    typed_config([f"experiment={preset}", *NEEDS.get(f"experiment={preset}", [])])
    text = (experiments_dir() / f"{preset}.yaml").read_text()
    assert text.splitlines()[1].startswith("# "), "each preset says what it is for"


def test_defaults_are_the_documented_ones():
    cfg = typed_config()
    assert cfg.data.source == "synthetic" and cfg.data.image_size == 48
    assert cfg.tuner.name.value == "random" and cfg.tuner.objective.value == "val_accuracy"
    assert cfg.tuner.max_trials >= 8
    assert cfg.mlflow.tracking_uri is None and cfg.sweep.name is None


@pytest.mark.parametrize(
    "override",
    [
        "model.dept.value=3",  # a typo in a key
        "model.depth.value=three",  # a wrong type
        "tuner.max_trials=many",
        "tuner.objective=val_acc",  # not a metric the model logs
        "optimizer.name.value=adm",
        "data.path=/photos",  # only data=folder has a path
        "model.depth=3",  # a space is a node: model.depth.value=3 pins it
    ],
)
def test_typos_and_wrong_types_fail_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_config([override])


def test_unknown_group_option_is_refused():
    with pytest.raises(MissingConfigException):
        compose_config(["tuner=bayes"])


def test_folder_data_needs_a_path():
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue):
        typed_config(["data=folder"])


def test_pin_choices_and_range_overrides():
    cfg = typed_config(
        [
            "model.depth.value=3",
            "model.filters.1.choices=[8,24]",
            "optimizer.learning_rate.max=0.05",
            "model.dropout.choices=[0.0,0.25]",
        ]
    )
    spaces = searchable(cfg)
    assert describe(spaces["model.depth"]) == "3"
    # The name of a hyperparameter is the override that changes it.
    assert spaces["model.filters.1"].choices == [8, 24]
    assert spaces["model.filters.0"].choices == [16, 32, 64]
    assert spaces["optimizer.learning_rate"] == FloatSpace(
        min=3e-4, max=0.05, sampling=Sampling.log
    )
    assert describe(spaces["model.dropout"]) == "{0, 0.25}"  # choices beat the range


def test_unused_spaces_are_not_searched():
    assert "optimizer.momentum" not in searchable(typed_config(["optimizer=adam"]))
    spaces = searchable(typed_config(["optimizer=search"]))
    assert {"optimizer.momentum", "optimizer.weight_decay"} <= spaces.keys()
    assert "model.filters.2" not in searchable(typed_config(["model.depth.max=2"]))
    # The same spaces the hypermodel declares: no dense layer, no dense units.
    assert "model.dense_units" not in searchable(typed_config(["model.dense_layers.value=0"]))
    assert "model.dense_units" in searchable(typed_config(["model.dense_layers.choices=[0,1]"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.learning_rate.min=0.1", "optimizer.learning_rate.max=0.01"], "is above"),
        (["model.depth.choices=null", "model.depth.min=null"], "not searchable as given"),
        (["model.filters.0.max=128"], "searched over choices"),
        (["model.depth.choices=[]"], "is empty"),
        (["optimizer.learning_rate.min=0"], "log sampling"),
        (
            ["model=seed", "model.depth.value=4"],
            "model.filters has 3 entries but model.depth reaches 4",
        ),
        (["model.dropout.value=1.5"], "[0, 1)"),
        (["data.val_fraction=0.5", "data.test_fraction=0.45"], "at least 10%"),
        (["sweep.name=../evil"], "sweep.name"),
        (["tuner.max_trials=0"], "at least 1"),
        (["seed=-1"], "seed=-1 must lie in [0, 4294967295)"),
        (["data.seed=4294967295"], "data.seed=4294967295 must lie"),
        (["data.min_face=0"], "data.min_face=0 must be at least 1 pixel"),
    ],
)
def test_values_that_cannot_run_get_a_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        typed_config(overrides)


def test_int_and_float_spaces_are_typed():
    cfg = typed_config(["model.dense_units.choices=[10,20]"])
    assert isinstance(cfg.model.dense_units, IntSpace)
    assert cfg.model.dense_units.choices == [10, 20]


def test_the_standard_environment_variable_chooses_the_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert typed_config().mlflow.tracking_uri == "sqlite:////elsewhere/mlflow.db"
    # A command-line override beats the variable.
    assert (
        typed_config(["mlflow.tracking_uri=http://server:5000"]).mlflow.tracking_uri
        == "http://server:5000"
    )


@pytest.mark.parametrize(
    "name",
    ["it's", 'say "cheese"', "a`b", "a\\b", "faces/v2", "a:b", "a@b", "a\nb", "", " a", ".."],
)
def test_a_model_name_mlflow_cannot_take_is_a_config_error(name):
    from happysad.config.validation import check_model_name

    with pytest.raises(ConfigError, match="^promote.model_name="):
        check_model_name(name, "promote.model_name")


def test_model_names_mlflow_takes_pass():
    from happysad.config.validation import check_model_name

    for name in ("happysad", "happysad-backbone", "faces v2.1_b"):
        check_model_name(name, "promote.model_name")
