"""Typed schemas of the configuration, and the search-space values they hold.

Hydra composes `conf/` against these dataclasses, so a misspelt key or a value of
the wrong type fails at composition with Hydra's own message. What a type cannot
say (a range whose minimum is above its maximum, fractions that leave no training
data) is checked by `validate`, also before TensorFlow is imported.

A searchable value is a *space*: pinned to one `value`, a list of `choices`, or a
range `min`..`max` (with optional `step` and `sampling`). When several are set,
`value` beats `choices`, and `choices` beats the range, so one override always
does what it says:

    model.depth.value=3            pin
    model.depth.choices=[2,3,4]    new list of choices
    optimizer.learning_rate.max=0.01   move a range bound
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from happysad.errors import ConfigError


class Sampling(Enum):
    linear = "linear"
    log = "log"


class OptimizerName(Enum):
    adam = "adam"
    sgd = "sgd"
    rmsprop = "rmsprop"
    adamw = "adamw"


class TunerName(Enum):
    random = "random"
    bayesian = "bayesian"
    hyperband = "hyperband"
    grid = "grid"


class Objective(Enum):
    """Metrics a sweep can optimise; they are the names Keras logs per epoch."""

    val_accuracy = "val_accuracy"
    val_auc = "val_auc"
    val_loss = "val_loss"
    accuracy = "accuracy"
    auc = "auc"
    loss = "loss"

    @property
    def direction(self) -> str:
        """ "min" for the losses, "max" for the others: the one place that says so."""
        return "min" if self in (Objective.loss, Objective.val_loss) else "max"


class ColorMode(Enum):
    grayscale = "grayscale"
    rgb = "rgb"


class Padding(Enum):
    valid = "valid"
    same = "same"


class Resize(Enum):
    """How an image that is not square is brought to data.image_size."""

    pad = "pad"  # keep all of it, pad the short side with its edge colour
    crop = "crop"  # keep the centre square
    stretch = "stretch"  # squeeze to a square


class Faces(Enum):
    """What the training images are, and so what prediction does with a picture."""

    crops = "crops"  # face crops (FER2013, the synthetic faces): prediction finds and crops faces
    detect = "detect"  # photos: training crops each image's largest face, prediction every face
    whole = "whole"  # whole pictures, in training and in prediction


class FaceDetector(Enum):
    mtcnn = "mtcnn"  # MTCNN (the mtcnn package, on TensorFlow): the default, by measurement
    haar = "haar"  # OpenCV's frontal-face cascade


class NoFace(Enum):
    skip = "skip"  # an image where data.faces=detect finds no face is skipped and reported
    keep = "keep"  # ... or used whole


class ClassWeight(Enum):
    balanced = "balanced"  # weigh each class by the inverse of its share of training images
    none = "none"


class PublicTest(Enum):
    val = "val"
    test = "test"


# --- search spaces -----------------------------------------------------------------


@dataclass
class IntSpace:
    value: int | None = None
    choices: list[int] | None = None
    min: int | None = None
    max: int | None = None
    step: int | None = None
    sampling: Sampling = Sampling.linear


@dataclass
class FloatSpace:
    value: float | None = None
    choices: list[float] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: Sampling = Sampling.linear


@dataclass
class OptimizerSpace:
    value: OptimizerName | None = None
    choices: list[OptimizerName] | None = None


# --- config groups -----------------------------------------------------------------


def _space(cls: type) -> Any:
    # Empty on purpose: the ranges live in conf/, the schema only types them.
    return field(default_factory=cls)


@dataclass
class DataConfig:
    image_size: int = 48
    color_mode: ColorMode = ColorMode.grayscale
    resize: Resize = Resize.pad
    faces: Faces = Faces.whole
    face_detector: FaceDetector = FaceDetector.mtcnn
    # Share of the face's side added around it on every side when cropping.
    face_margin: float = 0.25
    no_face: NoFace = NoFace.skip
    # Images declaring more pixels are skipped (decompression bombs).
    max_pixels: int = 40_000_000
    class_weight: ClassWeight = ClassWeight.balanced
    # Splits are drawn with their own seed, so that changing the training seed
    # keeps the same test images.
    seed: int = 0
    # Used where the data has no val/ (or test/) folder of its own.
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    batch_size: IntSpace = _space(IntSpace)
    # Generated synthetic images and decoded image arrays are kept here.
    cache_dir: str = ".cache/happysad"
    # Decode a data set once and reuse the arrays until a file or a setting changes.
    cache: bool = True


@dataclass
class SyntheticDataConfig(DataConfig):
    source: str = "synthetic"
    num_images: int = 4000
    # Share of faces whose mouth is nearly flat: the hard cases of the set.
    hard_fraction: float = 0.15


@dataclass
class FolderDataConfig(DataConfig):
    source: str = "folder"
    # A folder with one subfolder per class, or with train/ and test/ (and val/)
    # folders that each have one subfolder per class.
    path: str = MISSING
    happy_folder: str = "happy"
    sad_folder: str = "sad"


@dataclass
class Fer2013DataConfig(FolderDataConfig):
    source: str = "fer2013"
    # fer2013.csv (emotion,pixels,Usage), or the image-folder release (train/, test/).
    path: str = MISSING
    # Where the CSV's PublicTest rows go; PrivateTest rows are always the test split.
    public_test: PublicTest = PublicTest.val


@dataclass
class ModelConfig:
    depth: IntSpace = _space(IntSpace)
    # The filters of each conv block: one space per block, for every block the deepest
    # model has (the seed network's 16, 32, 16; or cheap wide blocks only where the
    # images are small). Block i's filters are the hyperparameter `model.filters.i`
    # (from 0), changed by `model.filters.i.choices=[...]` and the like.
    filters: list[IntSpace] = field(default_factory=list)
    kernel_size: IntSpace = _space(IntSpace)
    padding: Padding = Padding.valid
    dense_layers: IntSpace = _space(IntSpace)
    dense_units: IntSpace = _space(IntSpace)
    dropout: FloatSpace = _space(FloatSpace)


@dataclass
class AugmentationConfig:
    """Keras preprocessing layers at the model's input, active in training only.

    Each strength is a Keras factor (rotation: fraction of a full turn; zoom and
    translation: fraction of the image side; contrast and brightness: fraction of
    the value range). A strength of 0 leaves its layer out.
    """

    flip: bool = False
    rotation: FloatSpace = _space(FloatSpace)
    zoom: FloatSpace = _space(FloatSpace)
    translation: FloatSpace = _space(FloatSpace)
    contrast: FloatSpace = _space(FloatSpace)
    brightness: FloatSpace = _space(FloatSpace)


@dataclass
class OptimizerConfig:
    name: OptimizerSpace = _space(OptimizerSpace)
    learning_rate: FloatSpace = _space(FloatSpace)
    # Used by sgd and rmsprop.
    momentum: FloatSpace = _space(FloatSpace)
    # Used by adamw.
    weight_decay: FloatSpace = _space(FloatSpace)


@dataclass
class TunerConfig:
    name: TunerName = MISSING
    max_trials: int = 10
    # Epochs per trial; for hyperband, the most epochs a trial can reach.
    epochs: int = 10
    objective: Objective = Objective.val_accuracy
    # Stop a trial when the objective has not improved for this many epochs (0: off).
    early_stopping_patience: int = 3
    # Stop the search when this many trials fail one after the other.
    max_consecutive_failures: int = 3


@dataclass
class RandomTunerConfig(TunerConfig):
    name: TunerName = TunerName.random


@dataclass
class GridTunerConfig(TunerConfig):
    name: TunerName = TunerName.grid


@dataclass
class BayesianTunerConfig(TunerConfig):
    name: TunerName = TunerName.bayesian
    num_initial_points: int = 4
    alpha: float = 1e-4
    beta: float = 2.6


@dataclass
class HyperbandTunerConfig(TunerConfig):
    name: TunerName = TunerName.hyperband
    factor: int = 3
    iterations: int = 1


@dataclass
class MlflowConfig:
    # null: the MLFLOW_TRACKING_URI environment variable if set, else mlruns/ here.
    tracking_uri: str | None = None
    experiment: str = "happysad"
    log_models: bool = True


@dataclass
class SweepConfig:
    # null: a fresh name for every run (sweep-<date>-<time>-<random>).
    name: str | None = None
    # keras-tuner keeps each sweep's trial state in <dir>/<name>; running a named
    # sweep again continues it there.
    dir: str = "outputs/sweeps"
    # Start the named sweep afresh instead of continuing it (its earlier runs stay).
    restart: bool = False
    # Train each trial in a fresh process, so memory (host and GPU) is returned after
    # every trial and a crashed or out-of-memory trial fails alone; false trains in
    # the sweep's process (for a debugger), where TensorFlow's memory grows per trial.
    isolate_trials: bool = True


@dataclass
class Config:
    data: Any = MISSING
    model: ModelConfig = MISSING
    augmentation: AugmentationConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    tuner: Any = MISSING
    mlflow: MlflowConfig = MISSING
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # Seeds the search (trial sequence), weight initialisation and shuffling.
    seed: int = 42
    # TensorFlow's op determinism: the same seed and config give the same metrics too,
    # at some cost in speed.
    deterministic: bool = False


class TestMetric(Enum):
    """Metrics of the held-out test split that promotion compares."""

    accuracy = "accuracy"
    auc = "auc"
    precision = "precision"
    recall = "recall"


@dataclass
class PromoteSettings:
    # An explicit trial run to promote; by default the best finished trial of the
    # sweep named by sweep.name, or of the most recent sweep.
    run_id: str | None = None
    model_name: str = "happysad"
    metric: TestMetric = TestMetric.accuracy
    # The candidate must be at least this much better than the champion on the metric
    # (0: at least as good).
    margin: float = 0.0
    force: bool = False
    dry_run: bool = False


@dataclass
class PromoteConfig:
    mlflow: MlflowConfig = MISSING
    sweep: SweepConfig = field(default_factory=SweepConfig)
    promote: PromoteSettings = field(default_factory=PromoteSettings)


# --- where the configs live --------------------------------------------------------


def _resource_dir(name: str) -> Path:
    """A folder shipped inside a wheel, or the repository's own in an editable install."""
    packaged = Path(__file__).resolve().parent / name
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / name


def config_dir() -> Path:
    return _resource_dir("conf")


def experiments_dir() -> Path:
    return _resource_dir("experiments")


# Each group option's YAML starts from its schema: `- /schema/<group>/<name>@_here_`.
# They live in their own `schema/` tree so that they are not offered as options.
_SCHEMAS = {
    "data/synthetic": SyntheticDataConfig,
    "data/folder": FolderDataConfig,
    "data/fer2013": Fer2013DataConfig,
    "model/cnn": ModelConfig,
    "augmentation/augmentation": AugmentationConfig,
    "optimizer/optimizer": OptimizerConfig,
    "tuner/random": RandomTunerConfig,
    "tuner/grid": GridTunerConfig,
    "tuner/bayesian": BayesianTunerConfig,
    "tuner/hyperband": HyperbandTunerConfig,
    "mlflow/mlflow": MlflowConfig,
}


def register_configs() -> None:
    """Store the schemas, and the presets of experiments/ as the `experiment` group.

    The presets live at the top of the repository rather than under conf/, so they
    are registered here; each keeps its own defaults list and `_global_` package.
    """
    OmegaConf.register_new_resolver("happysad_groups", _group_listing, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="happysad_config", node=Config)
    cs.store(name="happysad_promote_config", node=PromoteConfig)
    for path, node in _SCHEMAS.items():
        group, name = path.split("/")
        cs.store(group=f"schema/{group}", name=name, node=node)
    for preset in sorted(experiments_dir().glob("*.yaml")):
        cs.store(
            group="experiment",
            name=preset.stem,
            node=OmegaConf.load(preset),
            package="_global_",
        )


def _group_listing() -> str:
    """The option lists of `--help`, without the schema/ tree."""
    groups = {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(config_dir().iterdir())
        if d.is_dir()
    }
    groups["experiment"] = sorted(p.stem for p in experiments_dir().glob("*.yaml"))
    return "".join(f"{name}: {', '.join(options)}\n" for name, options in sorted(groups.items()))


# --- checks types cannot express ---------------------------------------------------


def _check_space(key: str, space: Any) -> None:
    if space.value is not None:
        return
    if space.choices is not None:
        if len(space.choices) == 0:
            raise ConfigError(
                f"{key}.choices is empty: give at least one value, e.g. {key}.value=..."
            )
        lone = [b for b in ("min", "max") if getattr(space, b, None) is not None]
        if len(lone) == 1:
            raise ConfigError(
                f"{key}.{lone[0]} is set but {key} is searched over choices {list(space.choices)}: "
                f"to search a range instead, set both bounds and {key}.choices=null"
            )
        return
    if not hasattr(space, "min"):
        raise ConfigError(f"{key} has neither a value nor choices: set {key}.value=...")
    if space.min is None or space.max is None:
        raise ConfigError(
            f"{key} is not searchable as given: set {key}.value=..., {key}.choices=[...], "
            f"or both {key}.min and {key}.max"
        )
    if space.min > space.max:
        raise ConfigError(f"{key}.min={space.min} is above {key}.max={space.max}")
    if space.sampling is Sampling.log and space.min <= 0:
        raise ConfigError(f"{key} has log sampling, so {key}.min must be above 0 (got {space.min})")
    if space.step is not None and space.step <= 0:
        raise ConfigError(f"{key}.step must be above 0 (got {space.step})")


def space_values(space: Any) -> list[Any]:
    """Every value a discrete space can take, in order (for conditions on depth)."""
    if space.value is not None:
        return [space.value]
    if space.choices is not None:
        return list(space.choices)
    step = space.step or 1
    if space.sampling is Sampling.log:
        out, v = [], space.min
        while v <= space.max:
            out.append(v)
            v = v * max(step, 2)
        return out
    return list(range(space.min, space.max + 1, step))


_FRACTIONS = (
    "model.dropout",
    "augmentation.rotation",
    "augmentation.zoom",
    "augmentation.translation",
    "augmentation.contrast",
    "augmentation.brightness",
)


def _extremes(space: Any) -> list[Any]:
    if space.value is not None:
        return [space.value]
    if space.choices is not None:
        return list(space.choices)
    return [space.min, space.max]


# numpy takes seeds below 2**32; the last one is kept for keras-tuner (tuning.oracle_seed).
SEED_LIMIT = 2**32 - 1


def validate(cfg: Config) -> None:
    """Raise ConfigError for what the schema types cannot catch."""
    from happysad.search_space import searchable  # it builds on the types above

    # What is searched depends on these two: they must make sense first.
    _check_space("model.depth", cfg.model.depth)
    _check_space("model.dense_layers", cfg.model.dense_layers)
    spaces = searchable(cfg)
    for key, space in spaces.items():
        _check_space(key, space)
        if isinstance(space, IntSpace):
            lowest = 0 if key == "model.dense_layers" else 1
            if any(v < lowest for v in _extremes(space)):
                raise ConfigError(f"{key} must be at least {lowest} (got {describe(space)})")
    for key in _FRACTIONS:
        if any(not 0.0 <= v < 1.0 for v in _extremes(spaces[key])):
            raise ConfigError(f"{key} must lie in [0, 1) (got {describe(spaces[key])})")

    blocks = cfg.model.filters
    deepest = max(space_values(cfg.model.depth))
    if len(blocks) < deepest:
        raise ConfigError(
            f"model.filters has {len(blocks)} entries but model.depth reaches {deepest} blocks "
            f"({describe(cfg.model.depth)}): give a space for every block, e.g. "
            f"model.filters='[{{choices:[16,32,64]}}, ...]' with {deepest} entries, or lower model.depth"
        )

    for key, seed in (("seed", cfg.seed), ("data.seed", cfg.data.seed)):
        if not 0 <= seed < SEED_LIMIT:
            raise ConfigError(f"{key}={seed} must lie in [0, {SEED_LIMIT})")

    data = cfg.data
    if data.image_size < 8:
        raise ConfigError(f"data.image_size={data.image_size} is too small: use at least 8 pixels")
    if not 0.0 <= data.face_margin <= 2.0 or data.max_pixels < data.image_size**2:
        raise ConfigError(
            f"data.face_margin={data.face_margin} must lie in [0, 2] and "
            f"data.max_pixels={data.max_pixels} must allow at least one {data.image_size}x{data.image_size} image"
        )
    if isinstance(data, FolderDataConfig) and data.happy_folder == data.sad_folder:
        raise ConfigError(f"data.happy_folder and data.sad_folder are both '{data.happy_folder}'")
    if not (
        0 < data.val_fraction < 1
        and 0 <= data.test_fraction < 1
        and data.val_fraction + data.test_fraction <= 0.9
    ):
        raise ConfigError(
            f"data.val_fraction={data.val_fraction} and data.test_fraction={data.test_fraction} "
            "must each lie in [0, 1), validation above 0, and leave at least 10% for training"
        )
    if isinstance(data, SyntheticDataConfig):
        if data.num_images < 20:
            raise ConfigError(f"data.num_images={data.num_images} is too few: use at least 20")
        if not 0.0 <= data.hard_fraction <= 1.0:
            raise ConfigError(f"data.hard_fraction={data.hard_fraction} must lie in [0, 1]")

    tuner = cfg.tuner
    if tuner.max_trials < 1 or tuner.epochs < 1:
        raise ConfigError(
            f"tuner.max_trials={tuner.max_trials} and tuner.epochs={tuner.epochs} must be at least 1"
        )
    if tuner.early_stopping_patience < 0 or tuner.max_consecutive_failures < 1:
        raise ConfigError(
            f"tuner.early_stopping_patience={tuner.early_stopping_patience} must be at least 0 and "
            f"tuner.max_consecutive_failures={tuner.max_consecutive_failures} at least 1"
        )
    if isinstance(tuner, HyperbandTunerConfig) and tuner.factor < 2:
        raise ConfigError(f"tuner.factor={tuner.factor} must be at least 2 for hyperband")
    if cfg.sweep.name is not None and not _is_safe_name(cfg.sweep.name):
        raise ConfigError(
            f"sweep.name={cfg.sweep.name!r} must be letters, digits, '.', '_' or '-' "
            "(it names a folder and an MLflow run)"
        )


def _is_safe_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "._-" for c in name) and not name.startswith(".")


def describe(space: Any) -> str:
    """A space in words, for the console and the MLflow parent run."""
    if space.value is not None:
        return _fmt(space.value)
    if space.choices is not None:
        return "{" + ", ".join(_fmt(c) for c in space.choices) + "}"
    text = f"[{_fmt(space.min)}, {_fmt(space.max)}]"
    if space.step is not None:
        text += f" step {_fmt(space.step)}"
    if space.sampling is Sampling.log:
        text += " log"
    return text


def _fmt(v: Any) -> str:
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def data_config(values: dict[str, Any]) -> DataConfig:
    """A data section, as recorded with a sweep (config/config.yaml), typed again."""
    schemas = {
        "synthetic": SyntheticDataConfig,
        "folder": FolderDataConfig,
        "fer2013": Fer2013DataConfig,
    }
    schema = schemas.get(values.get("source"))
    if schema is None:
        raise ConfigError(f"data.source={values.get('source')!r} is not one of {sorted(schemas)}")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def compose(overrides: Sequence[str] = (), name: str = "config") -> DictConfig:
    """A config composed from conf/ with overrides, as the commands compose it (for
    scripts, benchmarks and tests that call run_sweep without the command line)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(name, overrides=list(overrides))


def to_typed(cfg: DictConfig) -> Config:
    """The composed config as plain dataclasses, checked; raises ConfigError."""
    typed = OmegaConf.to_object(cfg)
    validate(typed)
    return typed
