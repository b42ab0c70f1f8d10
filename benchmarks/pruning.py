"""Pruning on against off, under the same time budget.

For each seed, the same sweep (the default search on the default synthetic data unless
overrides say otherwise) runs once per arm, `tuner.pruning=none`, `median` and `asha`,
each under `tuner.time_budget`, in a store of its own. For every arm it reports the
best validation objective, the trials run and pruned, and the time (from the sweep's
start to the end of the trial that reached it) to reach the `none` arm's best of the
same seed. The issue's targets: the best with pruning at least as high, and its time to
the no-pruning best at most 60% of the no-pruning arm's.

    python benchmarks/pruning.py                               # 3 seeds, 5-minute budget
    python benchmarks/pruning.py --seeds 0 --budget 2m tuner.epochs=6

Extra arguments are Hydra overrides for every arm. Run it under the heavy-run lock on
a shared machine; record results in benchmarks/README.md with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ARMS = ("none", "median", "asha")


def run_arm(arm: str, seed: int, budget: str, overrides: list[str], root: Path) -> dict:
    from mlflow.tracking import MlflowClient

    from happysad.config.composition import compose
    from happysad.sweep import run_sweep

    folder = root / f"{arm}-{seed}"
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    cfg = compose(
        [
            f"mlflow.tracking_uri={uri}",
            f"sweep.dir={folder / 'sweeps'}",
            f"seed={seed}",
            f"tuner.time_budget={budget}",
            "tuner.max_trials=1000",  # the budget ends the search
            f"tuner.pruning={arm}",
            *overrides,
        ]
    )
    maximize = cfg.tuner.objective.direction == "max"
    result = run_sweep(cfg)
    client = MlflowClient(uri)
    parent = client.get_run(result.parent_run_id)
    start = parent.info.start_time
    # Each finished trial: when it ended (seconds from the sweep's start), its score.
    ends = sorted(
        ((r.info.end_time - start) / 1000, r.data.metrics["objective"])
        for r in client.search_runs(
            [result.experiment_id],
            f"tags.mlflow.parentRunId = '{result.parent_run_id}' and attributes.status = 'FINISHED'",
            max_results=10000,
        )
        if "objective" in r.data.metrics
    )
    return {
        "arm": arm,
        "seed": seed,
        "trials": len(result.results),
        "pruned": sum(r.pruned is not None for r in result.results),
        "best": result.best.score if result.best else None,
        "ends": ends,
        "maximize": maximize,
        "test": result.test_metrics,
    }


def time_to(ends: list, target: float, maximize: bool) -> float | None:
    """When the sweep first had a trial at least as good as `target`."""
    for seconds, score in ends:
        if (score >= target) if maximize else (score <= target):
            return seconds
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args, overrides = parser.parse_known_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows = []
    with tempfile.TemporaryDirectory(prefix="happysad-pruning-") as tmp:
        for seed in args.seeds:
            arms = {a: run_arm(a, seed, args.budget, overrides, Path(tmp)) for a in args.arms}
            base = arms.get("none")
            for a in arms.values():
                if base is not None and base["best"] is not None:
                    a["time_to_none_best"] = time_to(a["ends"], base["best"], a["maximize"])
                rows.append(a)
    print(f"\n{datetime.date.today()} {platform.node()} {os.cpu_count()} CPUs")
    print(f"budget {args.budget} per arm, seeds {args.seeds}, overrides {overrides or '(none)'}")
    print(f"{'arm':<7} {'seed':>4} {'trials':>6} {'pruned':>6} {'best':>7} {'to none best':>13}")
    for r in rows:
        when = r.get("time_to_none_best")
        print(
            f"{r['arm']:<7} {r['seed']:>4} {r['trials']:>6} {r['pruned']:>6} "
            f"{r['best'] or float('nan'):>7.4f} "
            f"{'never' if when is None else f'{when:.0f} s':>13}"
        )
    for arm in args.arms:
        bests = [r["best"] for r in rows if r["arm"] == arm and r["best"] is not None]
        times = [r["time_to_none_best"] for r in rows if r["arm"] == arm]
        reached = [t for t in times if t is not None]
        print(
            f"median {arm}: best {statistics.median(bests):.4f}, time to the none arm's best "
            + (f"{statistics.median(reached):.0f} s" if reached else "never")
            + f" (reached in {len(reached)} of {len(times)})"
        )
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
