"""What the schema's types cannot say, checked before TensorFlow is imported: a
range whose minimum is above its maximum, fractions that leave no training data, a
depth with no filters for its deepest block. Each failure is one ConfigError that
names the override to fix."""

from __future__ import annotations

from typing import Any

from happysad.config import duration
from happysad.config.schema import (
    HEARTBEAT,
    NO_BACKBONE,
    SEED_LIMIT,
    Config,
    DistributedMode,
    FolderDataConfig,
    HyperbandTunerConfig,
    IntSpace,
    Padding,
    Pruning,
    Sampling,
    SyntheticDataConfig,
    describe,
    space_values,
)
from happysad.config.search_space import searchable
from happysad.errors import ConfigError


def validate(cfg: Config) -> None:
    """Raise ConfigError for what the schema types cannot catch."""
    check_model_and_data(cfg)
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
    if tuner.time_budget is not None:
        duration.parse(tuner.time_budget)
    _check_distributed(cfg)
    if isinstance(tuner, HyperbandTunerConfig) and tuner.factor < 2:
        raise ConfigError(f"tuner.factor={tuner.factor} must be at least 2 for hyperband")
    _check_pruning(tuner)
    check_sweep_name(cfg.sweep.name)


def _check_pruning(tuner: Any) -> None:
    if tuner.pruning is Pruning.none:
        return
    if isinstance(tuner, HyperbandTunerConfig):
        raise ConfigError(
            f"tuner.pruning={tuner.pruning.value} cannot be combined with tuner=hyperband, which "
            "stops trials its own way: use tuner.pruning=none, or another tuner"
        )
    if tuner.pruning_warmup < 1:
        raise ConfigError(f"tuner.pruning_warmup={tuner.pruning_warmup} must be at least 1 epoch")
    if tuner.pruning is Pruning.asha and tuner.pruning_eta < 2:
        raise ConfigError(
            f"tuner.pruning_eta={tuner.pruning_eta} must be at least 2 for tuner.pruning=asha "
            "(a trial passes a rung only in the top 1/eta of the trials there)"
        )


def check_ensemble(promote: Any) -> None:
    """promote.ensemble=K: at least one member, and not beside an explicit trial."""
    if promote.ensemble < 1:
        raise ConfigError(
            f"promote.ensemble={promote.ensemble} must be at least 1 (the most trials the "
            "ensemble may hold), or null to promote one model"
        )
    if promote.run_id:
        raise ConfigError(
            "promote.ensemble chooses trials of a sweep, so it cannot be given with "
            f"promote.run_id={promote.run_id}: drop one of the two"
        )


def _check_distributed(cfg: Config) -> None:
    d = cfg.distributed
    if d.mode is DistributedMode.none:
        return
    if d.workers < 0 or d.restarts < 0 or d.connect_timeout <= 0:
        raise ConfigError(
            f"distributed.workers={d.workers} must be at least 0, distributed.restarts="
            f"{d.restarts} at least 0 and distributed.connect_timeout={d.connect_timeout} above 0"
        )
    if d.worker_timeout < 3 * HEARTBEAT:
        raise ConfigError(
            f"distributed.worker_timeout={d.worker_timeout} must be at least {3 * HEARTBEAT} "
            f"(seconds): a worker's heartbeat comes every {HEARTBEAT}"
        )
    if (d.cpus_per_worker is not None and d.cpus_per_worker < 1) or (
        d.gpus_per_worker is not None and d.gpus_per_worker < 0
    ):
        raise ConfigError(
            f"distributed.cpus_per_worker={d.cpus_per_worker} must be at least 1 and "
            f"distributed.gpus_per_worker={d.gpus_per_worker} at least 0 (or null: shared out)"
        )
    if d.mode is DistributedMode.ray:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError("distributed=ray needs Ray: pip install 'happysad[ray]'")
    if not 0 <= d.port < 65536:
        raise ConfigError(f"distributed.port={d.port} is not a port (0 takes a free one)")


def check_model_and_data(cfg: Any) -> dict[str, Any]:
    """The checks of the spaces, the model and the data, for any command that builds
    models from them (sweep, pretrain); returns the searched spaces by name."""
    # What is searched depends on these two: they must make sense first.
    _check_space("model.depth", cfg.model.depth)
    _check_space("model.dense_layers", cfg.model.dense_layers)
    spaces = searchable(cfg)
    for key, space in spaces.items():
        _check_space(key, space)
        if isinstance(space, IntSpace):
            lowest = 0 if key in ZERO_OK else 1
            if any(v < lowest for v in _extremes(space)):
                raise ConfigError(f"{key} must be at least {lowest} (got {describe(space)})")
    for key in (k for k in _FRACTIONS if k in spaces):
        if any(not 0.0 <= v < 1.0 for v in _extremes(spaces[key])):
            raise ConfigError(f"{key} must lie in [0, 1) (got {describe(spaces[key])})")

    for uri in space_values(cfg.model.backbone):
        if uri != NO_BACKBONE and not uri.startswith(BACKBONE_SCHEMES):
            raise ConfigError(
                f"model.backbone={uri!r} is neither none nor an MLflow model URI: give the one "
                "happysad.pretrain printed, like models:/happysad-backbone/1"
            )
    if "optimizer.backbone_lr_scale" in spaces and any(
        v <= 0 for v in _extremes(cfg.optimizer.backbone_lr_scale)
    ):
        raise ConfigError(
            "optimizer.backbone_lr_scale must be above 0 "
            f"(got {describe(cfg.optimizer.backbone_lr_scale)}): freeze blocks instead"
        )
    if cfg.model.padding is not Padding.same and True in space_values(cfg.model.residual):
        raise ConfigError(
            "model.residual=true needs model.padding=same: with valid padding a block's "
            "output no longer has its input's shape to add a shortcut to"
        )

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
    if data.min_face < 1:
        raise ConfigError(f"data.min_face={data.min_face} must be at least 1 pixel")
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
    return spaces


ZERO_OK = ("model.dense_layers", "optimizer.warmup_epochs", "model.frozen_blocks")
BACKBONE_SCHEMES = ("models:/", "runs:/", "file:", "mlflow-artifacts:")


def _is_safe_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "._-" for c in name) and not name.startswith(".")


def check_sweep_name(name: str | None, key: str = "sweep.name") -> None:
    """A sweep's name names a folder, an MLflow run and the value of the searches that
    find it: letters, digits, '.', '_' or '-' only (None: not named)."""
    if name is not None and not _is_safe_name(name):
        raise ConfigError(
            f"{key}={name!r} must be letters, digits, '.', '_' or '-' "
            "(it names a folder and an MLflow run)"
        )


# What a registered model's name cannot hold: a quote or backquote breaks MLflow's
# search filters (a version already registered is then not found, and registered again),
# '/' and ':' are refused by MLflow's registry, '@' would read as an alias in
# models:/NAME@ALIAS, and a backslash is an escape in filter strings.
_MODEL_NAME_FORBIDDEN = "'\"`\\/:@"


def check_model_name(name: str, key: str) -> None:
    """A registered model's name that MLflow's registry, its search filters and its
    models:/ URIs all take as it is."""
    bad = sorted({c for c in name if c in _MODEL_NAME_FORBIDDEN or not c.isprintable()})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise ConfigError(
            f"{key}={name!r} holds {shown}, which MLflow's registry or its searches cannot "
            "take: name the model with letters, digits, spaces, '.', '_' or '-'"
        )
    if not name.strip() or name != name.strip() or name.strip(".") == "":
        raise ConfigError(
            f"{key}={name!r} is not a model name MLflow keeps as it is (empty, only dots, or "
            "spaces around it): name the model with letters, digits, spaces, '.', '_' or '-'"
        )


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


_FRACTIONS = (
    "model.dropout",
    "augmentation.rotation",
    "augmentation.zoom",
    "augmentation.translation",
    "augmentation.contrast",
    "augmentation.brightness",
    "augmentation.erasing",
    "model.block_dropout",
    "optimizer.label_smoothing",
)


def _extremes(space: Any) -> list[Any]:
    if space.value is not None:
        return [space.value]
    if space.choices is not None:
        return list(space.choices)
    return [space.min, space.max]
