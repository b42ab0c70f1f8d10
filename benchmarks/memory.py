"""Memory over a long sweep: resident memory after trial 3 against after trial 30.

Runs a sweep of 30 small trials through happysad, MLflow recording included, and
reads resident memory (VmRSS) at the end of each trial: of the sweep's process,
of the server trial processes are forked from, and the peak of each trial's own
process. Target: at most 10% growth from trial 3 to trial 30.

Two arms, each in a fresh process: `isolated` (the default, every trial in its
own process) and `in-process` (sweep.isolate_trials=false, every trial in the
sweep's process; the baseline).

    python benchmarks/memory.py [--trials 30] [--arms isolated in-process] [overrides ...]

Record results in benchmarks/README.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import machine, start_sweep  # noqa: E402

ARMS = {"isolated": "sweep.isolate_trials=true", "in-process": "sweep.isolate_trials=false"}


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/PID/status (this benchmark reads Linux's /proc)")


def fork_server_pid() -> int | None:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None)


class MemoryMixin:
    def run_trial(self, trial, *args, **kwargs):
        try:
            return super().run_trial(trial, *args, **kwargs)
        finally:
            outcome = self._outcome
            self.trial_peak.append(outcome.peak_rss_mib if outcome else None)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        server = fork_server_pid()
        self.rows.append(
            {
                "sweep": rss_mib(),
                "server": rss_mib(server) if server else 0.0,
                "trial_peak": self.trial_peak[-1] or 0.0,
            }
        )
        row = self.rows[-1]
        print(
            f"trial {len(self.rows):>3}: sweep {row['sweep']:.0f} MiB, server {row['server']:.0f} MiB, "
            f"trial process peak {row['trial_peak']:.0f} MiB",
            file=sys.stderr,
            flush=True,
        )


def run_arm(arm: str, trials: int, extra: list[str], tmp: str) -> list[dict]:
    """One sweep in this process; the memory rows of its trials."""
    from happysad import tracking
    from happysad.config.composition import compose, to_typed
    from happysad.data import dataset as data_module
    from happysad.model.hypermodel import FaceHyperModel
    from happysad.search import training, tuning

    overrides = [
        "data.image_size=32",
        "data.num_images=400",
        f"data.cache_dir={tmp}/cache",
        f"tuner.max_trials={trials}",
        "tuner.epochs=1",
        "model.padding=same",  # every architecture fits the small images: no trial fails
        f"sweep.dir={tmp}/sweeps",
        "sweep.name=memory",
        ARMS[arm],
        *extra,
    ]
    cfg = to_typed(compose(overrides))
    if cfg.sweep.isolate_trials:
        training.start()
    images = data_module.load(cfg.data)
    uri = f"sqlite:///{tmp}/mlruns/mlflow.db"
    sweep = tracking.SweepRun(uri, tracking.open_experiment(uri, "memory"), "memory")
    start_sweep(sweep, overrides, images)
    tuner = tuning.make_tuner(
        cfg,
        FaceHyperModel(cfg, images.input_shape, len(images.train)),
        cfg.sweep.dir,
        "memory",
        sweep=sweep,
        data=images,
    )
    tuner.__class__ = type(f"Measured{type(tuner).__name__}", (MemoryMixin, type(tuner)), {})
    tuner.rows, tuner.trial_peak = [], []
    tuner.search(images, verbose=0)
    sweep.end(tracking.FINISHED)
    return tuner.rows


def growth(rows: list[dict], key) -> tuple[float, float, float]:
    third, last = key(rows[2]), key(rows[-1])
    return third, last, 100 * (last / third - 1) if third else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    if args.arm:  # a child process: one arm, its rows as JSON on the last line
        with tempfile.TemporaryDirectory(prefix="happysad-memory-") as tmp:
            print(json.dumps(run_arm(args.arm, args.trials, args.overrides, tmp)))
        return

    results = {}
    for arm in args.arms:
        print(f"arm {arm}: {args.trials} trials ...", flush=True)
        done = subprocess.run(
            [sys.executable, __file__, "--arm", arm, "--trials", str(args.trials), *args.overrides],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"the {arm} arm failed (its output is above)")
        results[arm] = json.loads(done.stdout.strip().splitlines()[-1])
        if len(results[arm]) < args.trials:
            sys.exit(f"arm {arm}: only {len(results[arm])} trials ran")

    print(f"\n{'arm':<11} {'process':<24} {'trial 3 MiB':>12} {'trial N MiB':>12} {'growth':>8}")
    measures = {
        "sweep's process": lambda r: r["sweep"],
        "fork server": lambda r: r["server"],
        "trial's process (peak)": lambda r: r["trial_peak"],
        "all three": lambda r: r["sweep"] + r["server"] + r["trial_peak"],
    }
    for arm, rows in results.items():
        for name, key in measures.items():
            if arm == "in-process" and name != "sweep's process":
                continue  # no other process
            third, last, pct = growth(rows, key)
            print(f"{arm:<11} {name:<24} {third:>12.0f} {last:>12.0f} {pct:>+7.1f}%")
    print(
        f"\nN = {args.trials}; target: at most +10% for the sweep (all its processes together). "
        "The sum counts twice the pages the trial's process shares with the fork server "
        "(TensorFlow's libraries, ~450 MiB of RSS in each), so it overstates what the machine spends."
    )
    print(f"machine: {machine()}; date: {datetime.date.today().isoformat()}")


if __name__ == "__main__":
    main()
