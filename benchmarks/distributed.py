"""Trials per hour: a local sweep against the distributed path, with 1 and 2 workers.

Runs the same search (same seed, space and trial budget, so the same trials) as five
arms, one after another, each in a fresh store:

  local-1t   a local sweep on one CPU core, TensorFlow on one thread
  dist-1w    distributed=local, 1 worker of one core and one thread
  dist-2w    distributed=local, 2 workers of one core and one thread each
  local-2t   a local sweep on two cores, two threads (the user's question: is two
             workers better than one sweep with the whole machine?)
  pair-1t    two independent local sweeps at once, one per core, each with half the
             trial budget (same seed: both draw the search's first half): what this
             machine gives two trials at once with nothing shared (no chief, no
             tracking server), the ceiling for dist-2w

A sweep's time is measured three ways: the command's wall time; its MLflow parent
run's span (from its start, after the chief's TensorFlow import, to its end, the
report included: workers' start-up counts against the distributed path); and the
trials only (the first trial's start to the last trial's end). Reports trials per hour
for each arm, the overhead of dist-1w against local-1t (target: at most 5%), the
scaling from dist-1w to dist-2w (target: at least 1.8x), and dist-2w against
local-2t, as medians over --repeats rounds (the arms interleaved within a round).

    python benchmarks/distributed.py                      # 12 trials of ~10 s
    python benchmarks/distributed.py --repeats 3 data.num_images=1000 tuner.max_trials=8 \\
        tuner.epochs=2                                    # the first, short workload

Extra arguments are Hydra overrides for every arm. Needs 2 cores. Record results in
benchmarks/README.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import contextlib
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

# Trials of about ten seconds on one core: long enough that training, not a trial's
# recording or a worker's start, is what the arms compare (8 trials of 2 epochs on
# 1,000 images, the first recorded run, measured mostly start-up).
WORKLOAD = [
    "debug=tiny",
    "data.num_images=3000",
    "tuner=random",
    "tuner.max_trials=12",
    "tuner.epochs=4",
    "seed=0",
]

HALF = "half"  # the arm's sweeps share the trial budget: each runs half of it

# Each arm: its sweeps, started together, each (overrides, cores; None: no affinity).
ARMS = {
    "local-1t": [(["distributed=none"], [0])],
    "dist-1w": [
        (["distributed=local", "distributed.workers=1", "distributed.cpus_per_worker=1"], None)
    ],
    "dist-2w": [
        (["distributed=local", "distributed.workers=2", "distributed.cpus_per_worker=1"], None)
    ],
    "local-2t": [(["distributed=none"], [0, 1])],
    # The machine's own ceiling for two trials at once: two independent local sweeps,
    # one per core, each with half the trials, nothing shared (no chief, no server).
    "pair-1t": [(["distributed=none", HALF], [0]), (["distributed=none", HALF], [1])],
}


def max_trials(overrides: list[str]) -> int:
    given = [o for o in overrides if o.startswith("tuner.max_trials=")]
    return int(given[-1].split("=", 1)[1])


def start_sweep(name, extra, cores, overrides, cache: Path, tmp: str) -> subprocess.Popen:
    if HALF in extra:
        half = max_trials(WORKLOAD + overrides) // 2
        extra = [e for e in extra if e != HALF]
        overrides = [*overrides, f"tuner.max_trials={half}"]
    command = [
        sys.executable,
        "-m",
        "happysad.sweep",
        *WORKLOAD,
        *extra,
        *overrides,
        f"data.cache_dir={cache}",
        f"mlflow.tracking_uri=sqlite:///{tmp}/mlruns/mlflow.db",
        f"sweep.dir={tmp}/sweeps",
        f"sweep.name=bench-{name}",
    ]
    env = dict(os.environ)
    if cores is not None:  # a local sweep: its whole process tree on these cores
        threads = str(len(cores))
        env |= {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads}
        env["OMP_NUM_THREADS"] = threads
    return subprocess.Popen(
        command,
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
    )


def recorded(tmp: str):
    """The sweep's parent run and its finished trial runs."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("happysad").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("happysad.role") == "sweep"]
    trials = [
        r
        for r in runs
        if r.data.tags.get("happysad.role") == "trial" and r.info.status == "FINISHED"
    ]
    return parent, trials


def run_arm(name: str, overrides: list[str], cache: Path) -> dict:
    with contextlib.ExitStack() as stack:
        tmps = [
            stack.enter_context(tempfile.TemporaryDirectory(prefix=f"happysad-bench-{name}-"))
            for _ in ARMS[name]
        ]
        started = time.perf_counter()
        sweeps = [
            start_sweep(name, extra, cores, overrides, cache, tmp)
            for (extra, cores), tmp in zip(ARMS[name], tmps, strict=True)
        ]
        outputs = [sweep.communicate()[0] for sweep in sweeps]
        wall = time.perf_counter() - started
        for sweep, output in zip(sweeps, outputs, strict=True):
            if sweep.returncode != 0:
                raise SystemExit(f"{name} failed:\n{output[-3000:]}")
        runs = [recorded(tmp) for tmp in tmps]
    parents = [parent for parent, _ in runs]
    trials = [t for _, ts in runs for t in ts]
    begin = min(p.info.start_time for p in parents)
    span = (max(p.info.end_time for p in parents) - begin) / 1000
    first = min(t.info.start_time for t in trials)
    busy = (max(t.info.end_time for t in trials) - first) / 1000
    return {
        "arm": name,
        "trials": len(trials),
        "sweep_s": span,
        "wall_s": wall,
        "start_up_s": (first - begin) / 1000,
        "median_trial_s": statistics.median(
            (t.info.end_time - t.info.start_time) / 1000 for t in trials
        ),
        "command_trials_per_hour": len(trials) / wall * 3600,
        "trials_per_hour": len(trials) / span * 3600,
        "steady_trials_per_hour": len(trials) / busy * 3600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("this benchmark needs 2 CPU cores")
    cache = Path(tempfile.mkdtemp(prefix="happysad-bench-cache-"))
    rows = []
    for round_ in range(args.repeats):
        for name in ARMS:
            row = run_arm(name, args.overrides, cache) | {"round": round_}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print()
    print(
        f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {datetime.date.today()}, {args.repeats} round(s), "
        f"workload {' '.join(WORKLOAD + args.overrides)}"
    )
    for key, what in (
        (
            "command_trials_per_hour",
            "the command (its wall time: Python's and TensorFlow's start too)",
        ),
        ("trials_per_hour", "whole sweep (parent run's span: start-up and report included)"),
        ("steady_trials_per_hour", "trials only (first trial's start to last trial's end)"),
    ):
        rate = {n: statistics.median(r[key] for r in rows if r["arm"] == n) for n in ARMS}
        print(f"{what}:")
        for name in ARMS:
            mine = [r for r in rows if r["arm"] == name]
            start_up = statistics.median(r["start_up_s"] for r in mine)
            sweep = statistics.median(r["sweep_s"] for r in mine)
            trial = statistics.median(r["median_trial_s"] for r in mine)
            print(
                f"  {name:<9} {rate[name]:7.1f} trials/hour (sweep {sweep:.0f} s, of which "
                f"{start_up:.0f} s before its first trial; a trial {trial:.1f} s)"
            )
        overhead = rate["local-1t"] / rate["dist-1w"] - 1
        print(f"  overhead, dist-1w against local-1t: {overhead:+.1%} (target <= 5%)")
        print(f"  scaling, dist-1w to dist-2w: {rate['dist-2w'] / rate['dist-1w']:.2f}x (>= 1.8x)")
        print(f"  dist-2w against local-2t: {rate['dist-2w'] / rate['local-2t']:.2f}x")
        print(
            f"  the machine's ceiling, pair-1t against local-1t: "
            f"{rate['pair-1t'] / rate['local-1t']:.2f}x; dist-2w reaches "
            f"{rate['dist-2w'] / rate['pair-1t']:.0%} of pair-1t"
        )


if __name__ == "__main__":
    main()
