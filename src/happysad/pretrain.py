"""`python -m happysad.pretrain data.path=DIR`: a backbone for sweeps to start from.

It trains one network of the model family (every space pinned) to tell apart the
classes of a folder with one subfolder per class, for instance FER2013's seven
expressions, records the run in MLflow (params, per-epoch metrics with the balanced
accuracy the uneven classes call for, a confusion matrix, the data set) and logs and
registers its blocks, the *backbone*, as a version of `pretrain.model_name`. A sweep
then searches `model.backbone=models:/<name>/<version>`: the head is new, the blocks
start from these weights.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from happysad.config import duration, search_space  # noqa: E402
from happysad.config.composition import config_dir, register_configs  # noqa: E402
from happysad.config.schema import PretrainConfig  # noqa: E402
from happysad.config.validation import check_model_and_data, check_model_name  # noqa: E402
from happysad.errors import ConfigError, HappysadError  # noqa: E402
from happysad.processes import signals_stop  # noqa: E402
from happysad.search import startup  # noqa: E402

if TYPE_CHECKING:
    from happysad.search.pretraining import PretrainResult

log = logging.getLogger("happysad")
register_configs()


def check(cfg: PretrainConfig) -> dict[str, Any]:
    """The config's checks, and every space pinned: one model is trained."""
    check_model_and_data(cfg)
    loose = [k for k, space in search_space.searchable(cfg).items() if not _pinned(space)]
    if loose:
        raise ConfigError(
            f"pretraining trains one model, but {', '.join(loose)} "
            f"{'is' if len(loose) == 1 else 'are'} searched: pin each with .value"
        )
    p = cfg.pretrain
    check_model_name(p.model_name, "pretrain.model_name")
    if p.epochs < 1 or p.early_stopping_patience < 0:
        raise ConfigError(
            f"pretrain.epochs={p.epochs} must be at least 1 and "
            f"pretrain.early_stopping_patience={p.early_stopping_patience} at least 0"
        )
    if p.time_budget is not None:
        duration.parse(p.time_budget, "pretrain.time_budget")
    h = p.hold_out
    if not (0 <= h.val_fraction < 1 and 0 <= h.test_fraction < 1):
        raise ConfigError(
            f"pretrain.hold_out.val_fraction={h.val_fraction} and .test_fraction="
            f"{h.test_fraction} must be at least 0 and below 1: set them to the sweep's "
            "data.val_fraction and data.test_fraction"
        )
    if h.path and not Path(h.path).expanduser().exists():
        raise ConfigError(
            f"pretrain.hold_out.path={h.path} does not exist: give the sweep's data.path"
        )
    return search_space.summary(cfg)


def _pinned(space: Any) -> bool:
    """One value: pinned, one distinct choice, or a range from a value to itself."""
    if space.value is not None:
        return True
    if space.choices is not None:
        return len(set(space.choices)) == 1
    return space.min == space.max


def pretrain(cfg: PretrainConfig, config_yaml: str = "") -> PretrainResult:
    """Train, record and register the backbone; raises a HappysadError the user can act on."""
    space = check(cfg)
    # TensorFlow's start-up lines go to a log recorded on the run, not the console.
    startup_log = Path(tempfile.mkdtemp(prefix="happysad-pretrain-")) / "startup.log"
    with startup.stderr_to(startup_log):
        from happysad.search import pretraining  # heavy (TensorFlow): past a good config

    return pretraining.run(cfg, space, startup_log, config_yaml)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="pretrain")
def main(cfg: DictConfig) -> None:
    try:
        with signals_stop():
            result = pretrain(OmegaConf.to_object(cfg), OmegaConf.to_yaml(cfg, resolve=True))
    except KeyboardInterrupt:
        log.warning("pretraining stopped; its MLflow run is marked KILLED")
        sys.exit(130)
    except HappysadError as err:
        log.error(f"error: {err}")
        sys.exit(2 if isinstance(err, ConfigError) else 1)
    m = result.metrics
    log.info(
        f"backbone pretrained in {result.seconds / 60:.1f} min ({result.epochs} epochs, best "
        f"{int(m['best_epoch']) + 1}): validation balanced accuracy "
        f"{m['val_balanced_accuracy']:.4f}, accuracy {m['val_accuracy']:.4f}"
    )
    log.info(f"registered as {result.registered_uri} (run {result.run_id})")
    log.info(f"a sweep starts from it with model.backbone={result.registered_uri}")


if __name__ == "__main__":
    main()
