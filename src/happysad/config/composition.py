"""Where the configuration comes from: `conf/` and `experiments/` (inside the wheel,
or the repository's own in an editable install), the schemas registered with Hydra,
and a composed config turned into checked dataclasses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from happysad.config.schema import (
    AugmentationConfig,
    BayesianTunerConfig,
    Config,
    DataConfig,
    DistributedConfig,
    Fer2013DataConfig,
    FolderDataConfig,
    GridTunerConfig,
    HyperbandTunerConfig,
    MlflowConfig,
    ModelConfig,
    OptimizerConfig,
    PretrainConfig,
    PromoteConfig,
    RandomTunerConfig,
    SyntheticDataConfig,
)
from happysad.config.validation import validate
from happysad.errors import ConfigError


def _resource_dir(name: str) -> Path:
    """A folder shipped inside a wheel, or the repository's own in an editable install."""
    package = Path(__file__).resolve().parents[1]  # src/happysad, or happysad in a wheel
    packaged = package / name
    if packaged.is_dir():
        return packaged
    return package.parents[1] / name


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
    "distributed/distributed": DistributedConfig,
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
    cs.store(name="happysad_pretrain_config", node=PretrainConfig)
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


def _group_schemas(group: str) -> dict[str, Any]:
    """A group's schemas by option name, e.g. the tuner's: {"random": RandomTunerConfig, ...}."""
    return {
        path.split("/")[1]: node for path, node in _SCHEMAS.items() if path.startswith(group + "/")
    }


def data_config(values: dict[str, Any]) -> DataConfig:
    """A data section, as recorded with a sweep (config/config.yaml), typed again."""
    schemas = _group_schemas("data")
    schema = schemas.get(values.get("source"))
    if schema is None:
        raise ConfigError(f"data.source={values.get('source')!r} is not one of {sorted(schemas)}")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def recorded_config(values: dict[str, Any]) -> Config:
    """A sweep's config as recorded with it (config/config.yaml), typed and checked
    again: what a distributed sweep's worker runs."""
    tuner = _group_schemas("tuner").get(values.get("tuner", {}).get("name"))
    if tuner is None:
        raise ConfigError(f"tuner.name={values.get('tuner', {}).get('name')!r} is not known")
    typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), values))
    typed.data = data_config(values["data"])
    typed.tuner = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(tuner), values["tuner"]))
    validate(typed)
    return typed


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
