"""`python -m happysad.compare [SWEEP ...] [--top N]`: sweeps side by side in the terminal.

With no SWEEP, or one: the top trials of that sweep (the latest by default), best
first, with their hyperparameters and metrics. With several: their best trials side
by side, with each sweep's test metrics.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from happysad.config.validation import check_sweep_name
from happysad.errors import HappysadError, StoreError
from happysad.tracking.names import DATA_DIGEST, PRUNED
from happysad.tracking.store import (
    Store,
    add_store_option,
    resolve_tracking_uri,
    without_credentials,
)

TRIAL_METRICS = ("objective", "val_accuracy", "val_auc", "val_loss", "best_epoch")
TEST_METRICS = ("test_accuracy", "test_auc", "test_precision", "test_recall")


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def top_trials(store, sweep_run, top: int) -> str:
    trials = store.finished_trials(sweep_run, limit=top)
    if not trials:
        return f"sweep '{sweep_run.info.run_name}' has no finished trial"
    names = list(dict.fromkeys(k for t in trials for k in t.data.params))
    objective = sweep_run.data.params.get("tuner.objective", "objective")
    header = ["rank", "trial", f"objective ({objective})", *TRIAL_METRICS[1:], "pruned", *names]
    rows = [header]
    for rank, t in enumerate(trials, start=1):
        metrics = [_value(t.data.metrics.get(m)) for m in TRIAL_METRICS]
        rows.append(
            [
                str(rank),
                t.info.run_name,
                *metrics,
                pruned_at(t.data.tags.get(PRUNED)),
                *[t.data.params.get(n, "") for n in names],
            ]
        )
    done = sweep_run.data.metrics
    pruned = int(done.get("trials_pruned", 0))
    summary = (
        f"sweep '{sweep_run.info.run_name}': {len(trials)} best of "
        f"{int(done.get('trials_finished', len(trials)))} finished trials"
        + (f" ({pruned} of them pruned)" if pruned else "")
        + "; test split of the best: "
        + (
            ", ".join(f"{m[5:]} {done[m]:.4f}" for m in TEST_METRICS if m in done)
            or "not evaluated"
        )
    )
    return summary + "\n" + table(rows)


def pruned_at(tag: str | None) -> str:
    """A pruned trial's tag, short: 'epoch 2 (median)'."""
    if not tag:
        return ""
    head = tag.split(":", 1)[0]  # 'epoch 2, rule median'
    epoch, _, rule = head.partition(", rule ")
    return f"{epoch} ({rule.split()[0]})" if rule else head


def side_by_side(store, sweep_runs: list) -> str:
    bests = [next(iter(store.finished_trials(s, limit=1)), None) for s in sweep_runs]
    names = list(dict.fromkeys(k for b in bests if b for k in b.data.params))
    rows = [["", *[s.info.run_name for s in sweep_runs]]]
    rows.append(["tuner", *[s.data.params.get("tuner.name", "") for s in sweep_runs]])
    rows.append(["objective", *[s.data.params.get("tuner.objective", "") for s in sweep_runs]])
    rows.append(["data digest", *[s.data.tags.get(DATA_DIGEST, "") for s in sweep_runs]])
    rows.append(["best trial", *[b.info.run_name if b else "(none)" for b in bests]])
    rows.append(
        ["trials pruned", *[_value(s.data.metrics.get("trials_pruned")) for s in sweep_runs]]
    )
    for m in TRIAL_METRICS:
        rows.append([m, *[_value(b.data.metrics.get(m)) if b else "" for b in bests]])
    for m in TEST_METRICS:
        rows.append([m, *[_value(s.data.metrics.get(m)) for s in sweep_runs]])
    for n in names:
        rows.append([n, *[b.data.params.get(n, "") if b else "" for b in bests]])
    digests = {s.data.tags.get(DATA_DIGEST) for s in sweep_runs}
    note = "" if len(digests) == 1 else "\nnote: the sweeps ran on different data (digests differ)"
    return table(rows) + note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m happysad.compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "sweeps", nargs="*", metavar="SWEEP", help="sweep names (default: the latest sweep)"
    )
    parser.add_argument(
        "--top", type=int, default=10, help="trials shown for one sweep (default 10)"
    )
    parser.add_argument(
        "--experiment", default="happysad", help="the MLflow experiment (default happysad)"
    )

    add_store_option(parser)
    args = parser.parse_args(argv)

    print(
        f"MLflow store: {without_credentials(resolve_tracking_uri(args.tracking_uri))}",
        file=sys.stderr,
    )
    try:
        for name in args.sweeps:
            check_sweep_name(name, "SWEEP")
        store = Store.existing(args.tracking_uri)
        experiment_id = store.experiment_id(args.experiment)
        if args.sweeps:
            runs = []
            for name in args.sweeps:
                found = store.find_sweeps(experiment_id, name, limit=1)
                if not found:
                    raise StoreError(f"no sweep named '{name}' in experiment '{args.experiment}'")
                runs.append(found[0])
        else:
            runs = store.find_sweeps(experiment_id, limit=1)
            if not runs:
                raise StoreError(f"experiment '{args.experiment}' has no sweep yet: run one first")
    except HappysadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(top_trials(store, runs[0], args.top) if len(runs) == 1 else side_by_side(store, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
