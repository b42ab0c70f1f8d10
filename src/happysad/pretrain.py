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
import multiprocessing
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from happysad.config import duration, search_space  # noqa: E402
from happysad.config.composition import config_dir, register_configs  # noqa: E402
from happysad.config.schema import PretrainConfig  # noqa: E402
from happysad.config.validation import check_model_and_data, check_model_name  # noqa: E402
from happysad.errors import ConfigError, HappysadError, TrainingDied  # noqa: E402
from happysad.processes import die_with_parent, died, signals_stop  # noqa: E402
from happysad.search import startup  # noqa: E402
from happysad.tracking import names  # noqa: E402
from happysad.tracking.runs import set_tags  # noqa: E402
from happysad.tracking.store import Store  # noqa: E402

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
    """Train, record and register the backbone; raises a HappysadError the user can act on.

    The training runs in a process of its own, so that a crash inside TensorFlow's
    native code (a segmentation fault, as oneDNN's once was) or a kill for memory ends
    with one sentence (what died, the signal, its log) and its MLflow run marked
    FAILED, instead of a bare exit 139 and a run left RUNNING."""
    space = check(cfg)
    # TensorFlow's start-up lines go to a log recorded on the run, not the console;
    # the training's own error output to another beside it.
    logs = Path(tempfile.mkdtemp(prefix="happysad-pretrain-"))
    context = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
    receive, send = context.Pipe(duplex=False)
    child = context.Process(
        target=_train,
        args=(cfg, space, logs, config_yaml, send),
        name="happysad-pretrain",
    )
    child.start()
    send.close()
    run: tuple[str, str] | None = None
    outcome: tuple | None = None
    try:
        while True:
            try:
                message = receive.recv()
            except EOFError:  # the process ended: its last message came before
                break
            if message[0] == "log":
                log.log(message[1], message[2])
            elif message[0] == "run":
                run = message[1], message[2]
            else:
                outcome = message
        child.join()
    except BaseException:  # Ctrl-C, SIGTERM: the training stops and marks its run KILLED
        if child.is_alive():
            os.kill(child.pid, signal.SIGTERM)
        child.join(timeout=120)
        raise
    finally:
        receive.close()
    if outcome is None:
        sentence = died("the pretraining's training process", child.exitcode, logs / TRAINING_LOG)
        _mark_failed(run, sentence, logs)
        raise TrainingDied(sentence)
    if outcome[0] == "interrupted":
        raise KeyboardInterrupt
    if outcome[0] == "failed":
        error, details = outcome[1], outcome[2]
        if not isinstance(error, HappysadError):
            log.error(details.rstrip())  # a bug: its traceback, from the training's process
        raise error
    return outcome[1]


TRAINING_LOG = "training.log"  # the training process's error output


def _train(cfg: PretrainConfig, space: dict, logs: Path, config_yaml: str, conn) -> None:
    """The training's process: the pretraining itself, its log lines and its end sent
    to the command's process."""
    import faulthandler

    # Ctrl-C reaches the command, which stops this process with SIGTERM (as any
    # other stop): one way to end, the run marked KILLED.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGTERM)  # a hard-killed command: the run is marked KILLED
    conn_log = _ToParent(conn)
    log.handlers[:] = [conn_log]
    log.setLevel(logging.INFO)
    log.propagate = False
    # Error output, and the Python stack of a crash in native code, to the log named
    # in the sentence if this process dies.
    target = os.open(logs / TRAINING_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(target, 2)
    os.close(target)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    faulthandler.enable(sys.stderr)
    try:
        with signals_stop():
            with startup.stderr_to(logs / "startup.log"):
                from happysad.search import pretraining  # heavy (TensorFlow), in this process

            result = pretraining.run(
                cfg,
                space,
                logs / "startup.log",
                config_yaml,
                on_run=lambda uri, run_id: conn.send(("run", uri, run_id)),
            )
        conn.send(("done", result))
    except KeyboardInterrupt:
        conn.send(("interrupted",))
    except BaseException as err:  # noqa: BLE001 - reported by the command's process
        details = traceback.format_exc()
        try:
            conn.send(("failed", err, details))
        except Exception:  # noqa: BLE001 - an error that does not pickle: its text
            conn.send(("failed", RuntimeError(f"{type(err).__name__}: {err}"), details))
    finally:
        conn.close()


class _ToParent(logging.Handler):
    """The training process's log lines, to the command's process that shows them."""

    def __init__(self, conn):
        super().__init__()
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.conn.send(("log", record.levelno, record.getMessage()))
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the command is gone; die_with_parent ends this process


def _mark_failed(run: tuple[str, str] | None, sentence: str, logs: Path) -> None:
    """The run of a training process that died: FAILED, with the sentence and the logs
    (its own `finally` never ran)."""
    if run is None:
        return
    uri, run_id = run
    try:
        store = Store(uri)
        set_tags(store, run_id, {names.NOTE: sentence, names.FAILURE: sentence[:4000]})
        for file in sorted(logs.iterdir()):
            if file.is_file() and file.stat().st_size:
                store.client.log_artifact(run_id, str(file), "logs")
        store.client.set_terminated(run_id, names.FAILED)
    except Exception as err:  # noqa: BLE001 - the sentence is said in any case
        log.warning(f"the pretraining's run {run_id} could not be marked FAILED: {err}")


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
