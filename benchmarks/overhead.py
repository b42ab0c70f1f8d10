"""What happysad's MLflow recording costs per trial, against bare keras-tuner.

Runs the same search (same config, data, hypermodel, tuner and seed, so the same
trial sequence) in two child processes: once with bare keras-tuner, once through
happysad with all its MLflow logging (per-epoch metrics, plots, model). Each
trial is timed from keras-tuner's `on_trial_begin` to the end of its
`on_trial_end`, which is where happysad does its recording. Reports the median
of the per-trial ratios tracked / bare.

    python benchmarks/overhead.py                   # the default sweep (10 trials)
    python benchmarks/overhead.py --repeats 2 tuner.max_trials=6

Extra arguments are Hydra overrides for both arms. By default happysad trains each
trial in its own process, so its whole-trial time includes starting that process;
its model is logged there, outside the timed hooks, so the ratio from the recording
time is complete only with sweep.isolate_trials=false. Record results in
benchmarks/README.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class TimingMixin:
    """Times each trial from on_trial_begin to the end of on_trial_end, and apart from
    that the time spent inside the tuner's lifecycle hooks, which is where happysad
    records (in the bare arm the same hooks do only keras-tuner's own work)."""

    def _timed(self, hook, *args):
        started = time.perf_counter()
        try:
            return hook(*args)
        finally:
            self._bench_hooks += time.perf_counter() - started

    def on_trial_begin(self, trial):
        self._bench_started = time.perf_counter()
        self._bench_hooks, self._bench_epochs = 0.0, 0
        self._timed(super().on_trial_begin, trial)

    def on_epoch_begin(self, trial, model, epoch, logs=None):
        self._timed(super().on_epoch_begin, trial, model, epoch, logs)

    def on_epoch_end(self, trial, model, epoch, logs=None):
        self._bench_epochs += 1
        self._timed(super().on_epoch_end, trial, model, epoch, logs)

    def _epoch_done(self, *args):  # happysad's epoch hook, fed by the trial's process
        self._bench_epochs += 1
        self._timed(super()._epoch_done, *args)

    def on_trial_end(self, trial):
        self._timed(super().on_trial_end, trial)
        self.bench.append(
            {
                "seconds": time.perf_counter() - self._bench_started,
                "hooks": self._bench_hooks,
                "epochs": self._bench_epochs,
            }
        )


def run_arm(arm: str, overrides: list[str], workdir: Path) -> dict:
    """One search in this process; returns the per-trial seconds."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from happysad import tracking
    from happysad.config.composition import compose, to_typed
    from happysad.data import dataset as data_module
    from happysad.model.hypermodel import FaceHyperModel
    from happysad.search import training, tuning

    cfg = to_typed(compose([*overrides, f"sweep.dir={workdir / 'sweeps'}", f"sweep.name={arm}"]))
    if arm == "happysad" and cfg.sweep.isolate_trials:
        training.start()
    images = data_module.load(cfg.data)
    hypermodel = FaceHyperModel(cfg, images.input_shape, len(images.train))
    sweep = None
    if arm == "happysad":
        uri = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
        sweep = tracking.SweepRun(uri, tracking.open_experiment(uri, "overhead"), arm)
        start_sweep(sweep, overrides, images)
    tuner = tuning.make_tuner(cfg, hypermodel, cfg.sweep.dir, arm, sweep=sweep, data=images)
    tuner.__class__ = type(f"Timed{type(tuner).__name__}", (TimingMixin, type(tuner)), {})
    tuner.bench = []
    started = time.perf_counter()
    tuner.search(images, verbose=0)
    total = time.perf_counter() - started
    if sweep is not None:
        sweep.end(tracking.FINISHED)
    return {"arm": arm, "trials": tuner.bench, "search_seconds": total}


def start_sweep(sweep, overrides: list[str], images) -> None:
    """Open a benchmark sweep's parent run the way happysad.sweep does, minus the
    config files (the benchmarks compose their own)."""
    sweep.start(
        config_yaml="",
        overrides=list(overrides),
        params={},
        data_summary=images.summary(),
        skipped=images.skipped,
        search_space={},
    )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=1, help="pairs of runs (bare, happysad)")
    parser.add_argument("--arm", choices=["bare", "happysad"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both arms")
    args = parser.parse_args()

    if args.arm:  # a child process: one arm, result as JSON on the last line
        print(json.dumps(run_arm(args.arm, args.overrides, Path(args.workdir))))
        return

    pairs = []
    with tempfile.TemporaryDirectory(prefix="happysad-overhead-") as tmp:
        cache = Path(tmp) / "cache"
        overrides = [f"data.cache_dir={cache}", *args.overrides]
        for repeat in range(args.repeats):
            arms = {}
            for arm in ("bare", "happysad"):
                workdir = Path(tmp) / f"{arm}-{repeat}"
                done = subprocess.run(
                    [sys.executable, __file__, "--arm", arm, "--workdir", str(workdir), *overrides],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode != 0:
                    sys.exit(f"the {arm} arm failed:\n{done.stderr[-3000:]}")
                arms[arm] = json.loads(done.stdout.strip().splitlines()[-1])
            bare, tracked = arms["bare"], arms["happysad"]
            pairs += [
                (repeat, i, b, t)
                for i, (b, t) in enumerate(zip(bare["trials"], tracked["trials"], strict=True))
            ]
            print(
                f"repeat {repeat}: search {bare['search_seconds']:.1f} s bare, "
                f"{tracked['search_seconds']:.1f} s happysad"
            )

    print(
        f"\n{'repeat':>6} {'trial':>5} {'epochs':>7} {'bare s':>8} {'happysad s':>11} {'ratio':>6} "
        f"{'recording s':>12} {'ratio from recording':>21}"
    )
    whole, recording = [], []
    for repeat, i, b, t in pairs:
        # Recording: what happysad's hooks took beyond keras-tuner's own work in them.
        extra = t["hooks"] - b["hooks"]
        by_recording = (b["seconds"] + extra) / b["seconds"]
        recording.append(by_recording)
        same = b["epochs"] == t["epochs"]
        if same:  # a trial stopped at another epoch is not a like-for-like pair
            whole.append(t["seconds"] / b["seconds"])
        epochs = f"{b['epochs']}" if same else f"{b['epochs']}/{t['epochs']}"
        print(
            f"{repeat:>6} {i:>5} {epochs:>7} {b['seconds']:>8.2f} {t['seconds']:>11.2f} "
            f"{t['seconds'] / b['seconds']:>6.3f} {extra:>12.2f} {by_recording:>21.3f}"
        )
    print(f"\nmachine: {machine()}")
    print(
        f"date: {datetime.date.today().isoformat()}, overrides: {' '.join(args.overrides) or '(defaults)'}"
    )
    if whole:
        median = statistics.median(whole)
        print(
            f"median per-trial ratio happysad / bare, {len(whole)} trials with the same epochs: "
            f"{median:.3f} ({100 * (median - 1):+.1f}%)"
        )
    median = statistics.median(recording)
    print(
        f"median per-trial ratio from the recording time, all {len(recording)} trials: "
        f"{median:.3f} ({100 * (median - 1):+.1f}%)"
    )


if __name__ == "__main__":
    main()
