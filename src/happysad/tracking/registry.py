"""The MLflow model registry, as promote uses it: registered versions, their tags,
and the aliases `champion` and `previous`."""

from __future__ import annotations

from typing import Any

from happysad.tracking import names
from happysad.tracking.store import Store


def version_by_alias(store: Store, name: str, alias: str) -> Any | None:
    """The version of registered model `name` with `alias`; None when there is no such
    model or alias yet."""
    from mlflow.exceptions import MlflowException

    try:
        return store.client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def version_of_run(store: Store, name: str, run_id: str) -> str | None:
    """The version of `name` registered from the trial run `run_id`, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = store.client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None  # no registered model of that name yet
    for version in versions:
        if version.tags.get(names.SOURCE_RUN_ID) == run_id:
            return str(version.version)
    return None


def register(store: Store, name: str, model_uri: str, tags: dict[str, str]) -> str:
    """A new version of `name` (created with the model if need be); its number."""
    import mlflow

    with store.scoped():  # the registry resolves a logged model's URI through the store
        version = mlflow.register_model(model_uri, name, tags=tags)
    return str(version.version)


def set_alias(store: Store, name: str, alias: str, version: str) -> None:
    store.client.set_registered_model_alias(name, alias, version)
