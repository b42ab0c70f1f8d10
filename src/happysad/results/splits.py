"""A sweep's images rebuilt from its recorded config and checked against its recorded
digest: the held-out test split that promote and export judge a model on, and the
training split an int8 export is calibrated on."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from happysad.config.composition import data_config
from happysad.data.dataset import ImageData, load
from happysad.errors import DataError, StoreError
from happysad.tracking import names
from happysad.tracking.store import Store


def sweep_images(store: Store, sweep_run: Any) -> ImageData:
    """Every split of the sweep's data, as the sweep split it; a DataError when they
    cannot be rebuilt or have changed since the sweep ran."""
    name = sweep_run.info.run_name
    text = store.read_text(sweep_run.info.run_id, "config/config.yaml")
    values = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    try:
        images = load(data_config(values["data"]))
    except DataError as err:
        raise DataError(f"the test split of sweep '{name}' cannot be rebuilt: {err}") from err
    recorded = sweep_run.data.tags.get(names.DATA_DIGEST)
    if recorded and images.digest != recorded:
        raise DataError(
            f"the data of sweep '{name}' changed since it ran (digest {recorded}, now "
            f"{images.digest}): its test split cannot be rebuilt; promote from a sweep on the current data"
        )
    if not len(images.test):
        raise DataError(f"sweep '{name}' has no test split (data.test_fraction=0)")
    return images


def sweep_of(store: Store, run_id: str) -> Any:
    """The sweep run a trial's run belongs to; a StoreError if it is not a trial's."""
    trial = store.run(run_id)
    parent = trial.data.tags.get(names.PARENT_RUN_ID)
    if trial.data.tags.get(names.ROLE) != names.ROLE_TRIAL or parent is None:
        raise StoreError(f"run {run_id} is not a happysad trial: its model's data is unknown")
    return store.run(parent)
