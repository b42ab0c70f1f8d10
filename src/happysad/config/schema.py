"""Typed schemas of the configuration, and the search-space values they hold.

(One file over 400 lines on purpose: the whole schema of every command, read top to
bottom beside conf/.)

Hydra composes `conf/` against these dataclasses, so a misspelt key or a value of
the wrong type fails at composition with Hydra's own message. What a type cannot
say (a range whose minimum is above its maximum, fractions that leave no training
data) is checked by `validation.validate`, also before TensorFlow is imported;
`composition` registers these schemas with Hydra and composes a config.

A searchable value is a *space*: pinned to one `value`, a list of `choices`, or a
range `min`..`max` (with optional `step` and `sampling`). When several are set,
`value` beats `choices`, and `choices` beats the range, so one override always
does what it says:

    model.depth.value=3            pin
    model.depth.choices=[2,3,4]    new list of choices
    optimizer.learning_rate.max=0.01   move a range bound
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


class Sampling(Enum):
    linear = "linear"
    log = "log"


class OptimizerName(Enum):
    adam = "adam"
    sgd = "sgd"
    rmsprop = "rmsprop"
    adamw = "adamw"


class Conv(Enum):
    """The convolutions of a block."""

    plain = "plain"  # Conv2D
    separable = "separable"  # SeparableConv2D: depthwise, then 1x1 (Xception, MobileNet)


class Head(Enum):
    """What turns the last block's feature map into one vector."""

    flatten = "flatten"  # every position its own weights (the seed's)
    average = "average"  # global average pooling: one value per filter


class Schedule(Enum):
    """How the learning rate moves during a trial."""

    constant = "constant"
    cosine = "cosine"  # warm-up, then cosine decay to 0 over tuner.epochs
    plateau = "plateau"  # halved when the objective has not improved for 2 epochs


class TunerName(Enum):
    random = "random"
    bayesian = "bayesian"
    hyperband = "hyperband"
    grid = "grid"


class Pruning(Enum):
    """What stops a losing trial before its last epoch (search/pruning.py)."""

    none = "none"  # every trial runs to its last epoch (or early stopping)
    median = "median"  # worse than the median of the other trials at the same epoch
    asha = "asha"  # asynchronous successive halving: only the top 1/eta pass each rung


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


@dataclass
class BoolSpace:
    value: bool | None = None
    choices: list[bool] | None = None


@dataclass
class ConvSpace:
    value: Conv | None = None
    choices: list[Conv] | None = None


@dataclass
class HeadSpace:
    value: Head | None = None
    choices: list[Head] | None = None


@dataclass
class ScheduleSpace:
    value: Schedule | None = None
    choices: list[Schedule] | None = None


@dataclass
class BackboneSpace:
    # "none", or the MLflow URI of a backbone made by happysad.pretrain
    # (models:/happysad-backbone/1, models:/happysad-backbone@alias, runs:/<id>/backbone).
    value: str | None = None
    choices: list[str] | None = None


NO_BACKBONE = "none"

# The spaces keras-tuner draws from; the enum-valued ones are lists of choices.
SPACES = (
    IntSpace,
    FloatSpace,
    BoolSpace,
    OptimizerSpace,
    ConvSpace,
    HeadSpace,
    ScheduleSpace,
    BackboneSpace,
)


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
    # Prediction: a face whose box side is under this many pixels is too small to
    # classify (said in its row; with --no-face whole a picture whose faces all are is
    # classified whole); larger ones are scaled up to data.image_size. FER2013 faces
    # shrunk to 6 pixels are classified at chance, to 8 above it (benchmarks/README.md).
    min_face: int = 8
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
    # What strong face models add to the seed's blocks (model=modern searches them).
    # Convolutions per block, each followed by batch normalisation (when on) and ReLU;
    # the block ends with 2x2 max pooling.
    convs_per_block: IntSpace = _space(IntSpace)
    conv: ConvSpace = _space(ConvSpace)
    batch_norm: BoolSpace = _space(BoolSpace)
    # A shortcut around each block (subsampled by 2, a 1x1 convolution), added to its output;
    # only with padding=same, where the shapes allow it.
    residual: BoolSpace = _space(BoolSpace)
    # Spatial dropout at the end of each block (whole feature maps dropped).
    block_dropout: FloatSpace = _space(FloatSpace)
    head: HeadSpace = _space(HeadSpace)
    # Transfer: the blocks of a pretrained backbone instead of the ones above (the head
    # is new); its first `frozen_blocks` blocks keep their weights.
    backbone: BackboneSpace = _space(BackboneSpace)
    frozen_blocks: IntSpace = _space(IntSpace)
    # Test-time flip: the trained model's prediction is the average of its predictions
    # on the image and on its mirror image, built into the saved model so that
    # evaluation, predict and serving all do the same. Training is unchanged.
    test_time_flip: bool = False


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
    # Random erasing: the probability that a training image gets a rectangle (2-20%
    # of its area) replaced by noise.
    erasing: FloatSpace = _space(FloatSpace)


@dataclass
class OptimizerConfig:
    name: OptimizerSpace = _space(OptimizerSpace)
    learning_rate: FloatSpace = _space(FloatSpace)
    # Used by sgd and rmsprop.
    momentum: FloatSpace = _space(FloatSpace)
    # Used by adamw.
    weight_decay: FloatSpace = _space(FloatSpace)
    # The learning rate's course.
    schedule: ScheduleSpace = _space(ScheduleSpace)
    # Epochs of linear warm-up from 0 before the cosine decay (used by schedule=cosine).
    warmup_epochs: IntSpace = _space(IntSpace)
    # The backbone's learning rate, as a fraction of the head's (with model.backbone).
    backbone_lr_scale: FloatSpace = _space(FloatSpace)
    # Targets 0/1 pulled towards 0.5 by this much (binary cross-entropy's smoothing).
    label_smoothing: FloatSpace = _space(FloatSpace)


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
    # The trials' time (30m, 2h, 1h30m): no trial is started that cannot finish in what
    # is left, and the one running when it ends stops with its best epoch. null: none.
    time_budget: str | None = None
    # Stop losing trials early, from the per-epoch histories the sweep records:
    # none, median or asha (not with hyperband, which stops trials its own way).
    pruning: Pruning = Pruning.none
    # Epochs every trial trains before pruning may stop it (asha's first rung).
    pruning_warmup: int = 2
    # asha: rungs at pruning_warmup * pruning_eta**k epochs; a trial passes one only in
    # the top 1/pruning_eta of the trials that reached it.
    pruning_eta: int = 3


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


class DistributedMode(Enum):
    none = "none"  # this process trains the trials
    local = "local"  # worker processes on this machine
    ray = "ray"  # worker processes held by Ray actors (pip install 'happysad[ray]')


HEARTBEAT = 5  # seconds between a training worker's heartbeats to a distributed sweep's chief


@dataclass
class DistributedConfig:
    """keras-tuner's distributed mode: this process (the chief) serves the search's
    oracle over gRPC and owns the sweep's run; workers train the trials."""

    mode: DistributedMode = DistributedMode.none
    # Worker processes started on this machine; 0: only workers started elsewhere
    # (python -m happysad.worker) train, and the chief waits for them.
    workers: int = 2
    # CPU cores each worker's trials train on (its threads and its cores); null: the
    # cores of this machine divided among the workers.
    cpus_per_worker: int | None = None
    # GPUs given to each worker, one set per worker; null: this machine's GPUs divided
    # among the workers (none each when there are fewer GPUs than workers).
    gpus_per_worker: int | None = None
    # Where the oracle listens. It has no authentication: keep it on loopback, or on a
    # private network only. port 0: a free port.
    host: str = "127.0.0.1"
    port: int = 0
    # How many times a worker that died is started again (under the same keras-tuner
    # id, so it gets its interrupted trial back) before the sweep goes on without it.
    restarts: int = 3
    # Seconds a worker waits for the chief and the tracking server before it gives up.
    connect_timeout: float = 60
    # Seconds the chief waits to hear from a worker it did not start (a worker sends a
    # heartbeat every few seconds while it trains) before it gives up on that worker and
    # on the trial it held. One started again under the same id before then gets its
    # trial back.
    worker_timeout: float = 300
    # distributed=ray: the cluster (`auto`: the one running here, or `ray://host:10001`);
    # null: a Ray started for the sweep on this machine and stopped with it.
    address: str | None = None

    @property
    def enabled(self) -> bool:
        return self.mode is not DistributedMode.none


@dataclass
class Config:
    data: Any = MISSING
    model: ModelConfig = MISSING
    augmentation: AugmentationConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    tuner: Any = MISSING
    mlflow: MlflowConfig = MISSING
    sweep: SweepConfig = field(default_factory=SweepConfig)
    distributed: DistributedConfig = MISSING
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
    # Exported at promotion, each checked before the version is registered (see
    # happysad.export): litert, litert:float16, litert:int8, onnx.
    exports: list[str] = field(default_factory=list)
    # K: the candidate is an ensemble of up to K of the sweep's finished trials, chosen
    # by greedy selection with replacement on the validation split; null: one model.
    ensemble: int | None = None


@dataclass
class PromoteConfig:
    mlflow: MlflowConfig = MISSING
    sweep: SweepConfig = field(default_factory=SweepConfig)
    promote: PromoteSettings = field(default_factory=PromoteSettings)


# --- where the configs live --------------------------------------------------------


@dataclass
class HoldOut:
    """The happy/sad data of the sweeps a backbone is for: its validation and test
    images, split as a sweep splits them, are left out of pretraining (FER2013's
    seven-class Training folder holds every image of its happy/sad train/ folder, so
    a backbone would otherwise have seen the images that choose the sweep's trials)."""

    # A folder (train/, test/ or one subfolder per class) or fer2013.csv; null: none.
    path: str | None = None
    # The sweep data's split settings (data.seed, data.val_fraction, data.test_fraction).
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15


@dataclass
class PretrainSettings:
    epochs: int = 40
    # Stop when the validation balanced accuracy has not improved for this many
    # epochs (0: off); the best epoch's weights are kept.
    early_stopping_patience: int = 6
    # The training's time (30m, 2h): stops after the last whole epoch that fits.
    time_budget: str | None = None
    # The backbone is registered under this name (a new version per run).
    model_name: str = "happysad-backbone"
    hold_out: HoldOut = field(default_factory=HoldOut)


@dataclass
class PretrainConfig:
    """`python -m happysad.pretrain`: one model, every space pinned, on a folder with
    one subfolder per class."""

    data: FolderDataConfig = MISSING
    model: ModelConfig = MISSING
    augmentation: AugmentationConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    mlflow: MlflowConfig = MISSING
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    seed: int = 42


# --- the space syntax ----------------------------------------------------------


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


# numpy takes seeds below 2**32; the last one is kept for keras-tuner (tuning.oracle_seed).
SEED_LIMIT = 2**32 - 1
