"""How a trained model is saved in MLflow: the Keras flavour, plus a python_function
flavour that takes image files.

`mlflow.keras.load_model(uri)` gives the Keras model (it takes uint8 pixel arrays
and rescales them itself). `mlflow.pyfunc.load_model(uri)` and `mlflow models serve`
give `happysad_pyfunc`: image file bytes (base64 in JSON) in, one row per face out
(box, label, P(happy)), with the preprocessing and face finding the model was trained
with. The code of that flavour is copied into the model, so serving needs nothing of
happysad installed.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import mlflow.keras
from mlflow import pyfunc
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from happysad.errors import StoreError
from happysad.serving import pyfunc as pyfunc_module
from happysad.serving.images import Preprocessing
from happysad.tracking import names
from happysad.tracking.store import Store

PACKAGE = "happysad_pyfunc"  # the flavour's code inside a model: not `happysad`, never shadowing it
CODE = "code"
DATA = "data"  # mlflow.keras keeps data/model.keras here

# Images in (file bytes; the scoring server decodes base64 for binary columns); one
# row per face out: which input, which face, its box, a label, P(happy) and an error.
# The params choose which faces get a row and what a picture with no face gets.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.binary, "image")]),
    outputs=Schema(
        [
            ColSpec(DataType.long, "input"),
            *(
                ColSpec(DataType.long, name, required=False)
                for name in ("face", "x", "y", "width", "height")
            ),
            ColSpec(DataType.string, "label", required=False),
            ColSpec(DataType.double, "probability", required=False),
            ColSpec(DataType.string, "error", required=False),
        ]
    ),
    params=ParamSchema(
        [
            ParamSpec("faces", DataType.string, pyfunc_module.FACES[0]),
            ParamSpec("no_face", DataType.string, pyfunc_module.NO_FACE[0]),
        ]
    ),
)


def save_model(
    model: Any,
    path: str,
    mlflow_model: Model | None = None,
    settings: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """The flavour's save function, as `mlflow.models.Model.log` calls it."""
    mlflow_model = mlflow_model or Model()
    # The signature describes the images-in flavour, which mlflow.keras would refuse.
    signature = kwargs.pop("signature", None)
    quiet = logging.getLogger("mlflow.keras.save")  # it warns that the signature is missing
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        mlflow.keras.save_model(model, path, mlflow_model=mlflow_model, **kwargs)
    finally:
        quiet.setLevel(level)
    mlflow_model.signature = signature
    root = Path(path)
    (root / DATA / pyfunc_module.SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    package = root / CODE / PACKAGE
    package.mkdir(parents=True)
    here = Path(pyfunc_module.__file__).parent
    for name in ("pyfunc.py", "images.py", "faces.py"):
        shutil.copy(here / name, package / name)
    (package / "__init__.py").write_text(
        '"""happysad\'s python_function flavour, copied into the model."""\n'
    )
    keras_pyfunc = mlflow_model.flavors[pyfunc.FLAVOR_NAME]
    pyfunc.add_to_model(
        mlflow_model,
        loader_module=f"{PACKAGE}.pyfunc",
        data=DATA,
        code=CODE,
        conda_env=keras_pyfunc.get(pyfunc.ENV, {}).get("conda"),
        python_env=keras_pyfunc.get(pyfunc.ENV, {}).get("virtualenv"),
    )
    mlflow_model.save(str(root / "MLmodel"))


def log_model(
    store: Store, run_id: str, model: Any, settings: dict[str, Any], metadata: dict[str, Any]
) -> str:
    """The trained model, logged on run `run_id` of `store` under the name `model`,
    with its preprocessing and pinned requirements; its URI."""
    experiment_id = store.client.get_run(run_id).info.experiment_id
    # MLflow's model logging reads the global tracking URI and current experiment.
    with store.scoped(experiment_id):
        info = Model.log(
            artifact_path=None,
            name="model",
            flavor=sys.modules[__name__],
            run_id=run_id,
            model=model,
            settings=settings,
            signature=SIGNATURE,
            metadata={"happysad": metadata},
            # Explicit: inferring them starts a subprocess that costs seconds per model.
            pip_requirements=model_requirements(settings),
        )
    store.client.set_tag(run_id, names.MODEL_URI, info.model_uri)
    return info.model_uri


def log_backbone(store: Store, run_id: str, model: Any, metadata: dict[str, Any]) -> str:
    """A pretrained backbone (a Keras model from 0-1 pixels to feature maps), logged on
    run `run_id` under the name `backbone` in the Keras flavour; its URI."""
    import numpy as np
    from mlflow.types.schema import TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, *model.input_shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, *model.output_shape[1:]))]),
    )
    with store.scoped(store.client.get_run(run_id).info.experiment_id):
        info = Model.log(
            artifact_path=None,
            name="backbone",
            flavor=mlflow.keras,
            run_id=run_id,
            model=model,
            signature=signature,
            metadata={"happysad_backbone": metadata},
            pip_requirements=[
                f"{p}=={importlib.metadata.version(p)}" for p in ("tensorflow", "keras", "numpy")
            ],
        )
    store.client.set_tag(run_id, names.BACKBONE_URI, info.model_uri)
    return info.model_uri


def fetch_backbone(store: Store, uri: str, dest: Path) -> tuple[Path, dict[str, Any]]:
    """A backbone logged by happysad.pretrain, downloaded into `dest`: its Keras file
    and what it was trained on (input shape, preprocessing, blocks, data digest, run).
    A StoreError says what is wrong with the URI."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    dest.mkdir(parents=True, exist_ok=True)
    try:
        with store.scoped():  # models:/ URIs resolve through the store's registry
            local = Path(download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except (MlflowException, OSError) as err:
        text = getattr(err, "message", str(err))
        raise StoreError(f"model.backbone={uri} cannot be read from {store.uri}: {text}") from err
    metadata = (Model.load(str(local / "MLmodel")).metadata or {}).get("happysad_backbone")
    keras_file = next(local.rglob("*.keras"), None)
    if metadata is None or keras_file is None:
        raise StoreError(
            f"model.backbone={uri} is not a backbone made by happysad.pretrain "
            "(its MLmodel has no happysad_backbone metadata): pretrain one first"
        )
    return keras_file, metadata


# What each face detector needs where the model is loaded (the mtcnn package brings its
# weights inside its wheel, and needs lz4 and joblib to read them).
DETECTOR_PACKAGES = {"mtcnn": ["mtcnn", "lz4", "joblib"], "haar": ["opencv-python-headless"]}


def model_requirements(settings: dict[str, Any]) -> list[str]:
    """What loading and serving the model needs, pinned to this environment's versions."""
    packages = ["tensorflow", "keras", "numpy", "pillow", "pandas"]
    prep = Preprocessing.from_dict(settings["preprocessing"])
    if prep.finds_faces:
        packages += DETECTOR_PACKAGES[prep.face_detector]
    return [f"{p}=={importlib.metadata.version(p)}" for p in packages]


def warm_up() -> None:
    """Fill the caches every trial's process would otherwise fill again when it logs
    its model (the trials' fork server runs this once)."""
    try:  # MLflow maps modules to packages once per process to check a model's requirements
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()
    except Exception:  # noqa: BLE001 - private API: without it a trial logs its model slower
        pass
