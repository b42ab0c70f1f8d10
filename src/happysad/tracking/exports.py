"""The MLflow side of an export: the logged model it starts from, and the exported file
logged beside it on the same run (artifacts `export/`), with its check as tags."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from happysad.errors import ConfigError, StoreError
from happysad.serving.pyfunc import KERAS_FILE, SETTINGS_FILE
from happysad.tracking import names
from happysad.tracking.store import Store

FOLDER = "export"  # the run's artifact folder of its exported files
EXPORT = names.PREFIX + "export."  # + an export's name (litert-int8) + "." + a number's name


@dataclass
class Source:
    """A happysad model in the store, downloaded: what an export starts from."""

    uri: str
    run_id: str  # the run that logged it (a trial's run)
    keras_file: Path
    settings: dict[str, Any]  # its happysad.json: preprocessing, class names


def fetch(store: Store, uri: str, dest: Path) -> Source:
    """The model at `uri` (models:/, runs:/), downloaded into `dest`; a StoreError for a
    URI that names nothing, a ConfigError for a model that is not happysad's."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        with store.scoped():  # models:/ URIs resolve through the store's registry
            local = Path(download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except (MlflowException, OSError) as err:
        text = getattr(err, "message", str(err))
        raise StoreError(f"the model {uri} cannot be read from {store.uri}: {text}") from err
    mlmodel = local / "MLmodel"
    settings_file = next(local.rglob(SETTINGS_FILE), None)
    keras_file = next(local.rglob(KERAS_FILE), None)
    if not mlmodel.is_file() or settings_file is None or keras_file is None:
        raise ConfigError(
            f"{uri} is not a model of happysad's (it has no {SETTINGS_FILE} and {KERAS_FILE}): "
            "name a trial's model or a registered happysad version"
        )
    run_id = Model.load(str(mlmodel)).run_id
    if not run_id:
        raise StoreError(f"the model {uri} names no run that logged it: export a logged model")
    return Source(uri, run_id, keras_file, json.loads(settings_file.read_text()))


def log_export(store: Store, run_id: str, path: Path, check: dict[str, Any]) -> str:
    """The exported file and its check logged on `run_id`; the file's artifact path."""
    name = check["name"]
    store.client.log_artifact(run_id, str(path), FOLDER)
    report = path.with_name(f"{name}.check.json")
    report.write_text(json.dumps(check, indent=2, sort_keys=True))
    store.client.log_artifact(run_id, str(report), FOLDER)
    for key in ("agreement", "auc", "size_bytes", "latency_ms"):
        store.client.set_tag(run_id, f"{EXPORT}{name}.{key}", f"{check[key]:.6g}")
    return f"{FOLDER}/{path.name}"


def logged_exports(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The checks of the files exported from the model of `run_id`, by name."""
    out = []
    for item in store.client.list_artifacts(run_id, FOLDER):
        if item.path.endswith(".check.json"):
            out.append(json.loads(store.read_text(run_id, item.path)))
    return sorted(out, key=lambda c: c["name"])
