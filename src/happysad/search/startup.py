"""TensorFlow's start in the sweep's process, kept off the console.

TensorFlow's C++ core writes its start-up lines (`All log messages before
absl::InitializeLog() ...`, `Could not find cuda drivers`, `E0000 ... failed call to
cuInit`) straight to file descriptor 2 before any logging is set up, so no
environment variable or Python logger silences them, and a newcomer reads
`E0000 ... CUDA error` as a failure. Here they go to the sweep's `startup.log`
(recorded on its MLflow run as `logs/startup.log`) while TensorFlow is imported, the
server trial processes are forked from starts, and the devices are found; the console
gets one line saying where training runs. Descriptor 2 is the console again afterwards,
so real errors later in the run still reach it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """File descriptor 2 (C++ libraries' output included) appended to `path`, then back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(target, 2)
    os.close(target)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def start_tensorflow(
    log: Path, *, trial_server: Callable[[], None] | None, trains_here: bool = True
) -> str:
    """Import TensorFlow, start the trial processes' server with `trial_server` (which
    keeps writing its own start-up lines to `log`), and find the GPUs, with their
    messages in `log`.
    The sweep's process keeps off the GPUs when trials train in processes of their own,
    and when it trains nothing (a distributed sweep's chief: its workers train).
    Returns the one line for the console."""
    with stderr_to(log):
        import tensorflow as tf

        if trial_server is not None:
            trial_server()
        gpus = tf.config.list_physical_devices("GPU")
        if trial_server is not None or not trains_here:
            keep_off_gpus()
    if not gpus:
        return f"no GPU found: training runs on the CPU (TensorFlow's start-up messages: {log})"
    names = ", ".join(g.name.removeprefix("/physical_device:") for g in gpus)
    where = (
        "the workers"
        if not trains_here
        else "each trial's process"
        if trial_server is not None
        else "the sweep's process"
    )
    return f"training on {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({names}) in {where}"


def keep_off_gpus() -> None:
    """The sweep's process builds models only to discover the search space: it keeps
    off the GPUs, which TensorFlow would otherwise fill, so the trials get them whole."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow is already running here (an earlier sweep)
        pass
