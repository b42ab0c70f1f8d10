"""Hydra callbacks: what must happen once, in Hydra's own process, around the jobs."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from happysad.tracking.store import Store


class PrepareStore(Callback):
    """Create the MLflow store and experiment before a multirun's jobs start.

    A fresh SQLite store migrated by several processes at once fails; jobs run in
    parallel by the joblib launcher would race to create it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:

        Store.resolve(config.mlflow.tracking_uri).open_experiment(config.mlflow.experiment)
