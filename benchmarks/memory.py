"""Memory over a long sweep: resident memory after trial 3 against after trial 30.

Runs a sweep of 30 small trials through happysad, MLflow recording included, in
this process, and reads the resident set size (VmRSS) at the end of each trial.
Target: at most 10% growth from trial 3 to trial 30 (the Keras session is cleared
between trials; figures, models and runs must not pile up).

    python benchmarks/memory.py [--trials 30] [overrides ...]

Record results in benchmarks/README.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import machine  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark reads Linux's /proc)")


class MemoryMixin:
    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self.rss.append(rss_mib())
        print(f"trial {len(self.rss):>3}: {self.rss[-1]:.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir

    from happysad import data as data_module
    from happysad import tracking, tuning
    from happysad.config import config_dir, register_configs, to_typed
    from happysad.hypermodel import FaceHyperModel

    register_configs()
    with tempfile.TemporaryDirectory(prefix="happysad-memory-") as tmp:
        overrides = [
            "data.image_size=32",
            "data.num_images=400",
            f"data.cache_dir={tmp}/cache",
            f"tuner.max_trials={args.trials}",
            "tuner.epochs=1",
            f"sweep.dir={tmp}/sweeps",
            "sweep.name=memory",
            *args.overrides,
        ]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = to_typed(compose("config", overrides=overrides))
        images = data_module.load(cfg.data)
        uri = f"sqlite:///{tmp}/mlruns/mlflow.db"
        sweep = tracking.SweepRun(tracking.open_experiment(uri, "memory"), "memory")
        sweep.start(
            config_yaml="",
            overrides=overrides,
            params={},
            data_summary=images.summary(),
            skipped=[],
            search_space={},
        )
        tuner = tuning.make_tuner(
            cfg,
            FaceHyperModel(cfg, images.input_shape),
            cfg.sweep.dir,
            "memory",
            sweep=sweep,
            data=images,
        )
        tuner.__class__ = type(f"Measured{type(tuner).__name__}", (MemoryMixin, type(tuner)), {})
        tuner.rss = []
        tuner.search(images, verbose=0)
        sweep.end(tracking.FINISHED)

    rss = tuner.rss
    if len(rss) < 30 and args.trials >= 30:
        sys.exit(f"only {len(rss)} trials ran: the random search ran out of new combinations")
    third, last = rss[2], rss[-1]
    print(
        f"\nresident memory after trial 3: {third:.0f} MiB; after trial {len(rss)}: {last:.0f} MiB; "
        f"growth {100 * (last / third - 1):+.1f}% (target: at most +10%)"
    )
    print(f"machine: {machine()}; date: {datetime.date.today().isoformat()}")


if __name__ == "__main__":
    main()
