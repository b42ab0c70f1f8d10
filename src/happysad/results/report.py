"""What a sweep's parent run gets at the end: the best trial, the table of trials, the
plots, the test evaluation of the best model, and `sweep_report.html`, one
self-contained page with all of it (it opens in the MLflow UI's artifact view and
offline in a browser)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from happysad.data.dataset import CLASS_NAMES
from happysad.results import evaluation, plots
from happysad.tracking import names
from happysad.trials import TrialRecord

MOST_WRONG = 12  # images in a split's grid of confident mistakes


@dataclass
class Outcome:
    """Everything logged on the parent at the end, ready for tracking.SweepRun.finish."""

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)  # artifact path -> PNG
    texts: dict[str, str] = field(default_factory=dict)  # artifact path -> text


def build(
    *,
    name: str,
    tuner: str,
    objective: str,
    maximize: bool,
    results: list[TrialRecord],
    best: TrialRecord | None,
    test_y: np.ndarray | None,
    test_prob: np.ndarray | None,
    data_summary: dict[str, Any],
    stopped_early: str | None,
) -> Outcome:
    out = Outcome()
    finished = [r for r in results if r.score is not None]
    out.metrics = {
        "trials_finished": float(len(finished)),
        "trials_failed": float(len(results) - len(finished)),
        "trials_pruned": float(sum(r.pruned is not None for r in finished)),
    }
    values = [
        {k: _number(v) for k, v in r.hyperparameters.items() if not k.startswith("tuner/")}
        for r in finished
    ]
    scores = [r.score for r in finished]
    weights = evaluation.importance(values, scores)
    figures = {
        "plots/objective_per_trial.png": plots.objective_per_trial(
            [int(r.trial_id) for r in results],
            [r.score for r in results],
            objective,
            maximize,
        ),
        "plots/parallel_coordinates.png": plots.parallel_coordinates(
            values, scores, objective, maximize
        ),
        "plots/hyperparameter_importance.png": plots.importance_bars(
            weights, objective, len(finished)
        ),
    }
    out.texts["trials.csv"] = trials_csv(results)
    if best is not None:
        out.metrics["best_objective"] = best.score
        out.tags[names.BEST_TRIAL_ID] = best.trial_id
        out.tags[names.BEST_RUN_ID] = best.run_id
        # Tags, not params: a continued sweep may find a new best, and params are immutable.
        out.tags.update({names.BEST + k: str(v) for k, v in best.hyperparameters.items()})
        if best.model_uri:
            out.tags[names.BEST_MODEL_URI] = best.model_uri
        out.texts["best_trial.json"] = json.dumps(
            {
                k: getattr(best, k)
                for k in ("trial_id", "run_id", "score", "hyperparameters", "model_uri")
            },
            indent=2,
        )
    test: dict[str, float] = {}
    if best is not None and test_prob is not None and len(test_prob):
        evaluated = evaluate_split("test", test_y, test_prob, f"best model (trial-{best.trial_id})")
        test = evaluated.metrics
        out.metrics.update({f"test_{k}": v for k, v in test.items()})
        figures.update(evaluated.figures)
    out.images = {path: _png(fig) for path, fig in figures.items()}
    out.texts["sweep_report.html"] = _page(
        name,
        tuner,
        objective,
        maximize,
        results,
        best,
        test,
        weights,
        data_summary,
        stopped_early,
        out.images,
    )
    return out


@dataclass
class SplitEvaluation:
    """A model's predictions on one split: its metrics and figures."""

    metrics: dict[str, float]  # accuracy, auc, precision, recall, average_precision
    figures: dict[str, Any]  # plots/<split>_*.png -> matplotlib Figure


def evaluate_split(
    split: str, y: np.ndarray, prob: np.ndarray, who: str, x: np.ndarray | None = None
) -> SplitEvaluation:
    """Evaluate a model on one split from its P(happy) per image: the one function for
    a trial's validation split and the best model's test split. With the images `x`,
    also the grid of those it got most confidently wrong."""
    title = {"val": "validation"}.get(split, split)
    metrics = evaluation.binary_metrics(y, prob)
    metrics["average_precision"] = evaluation.average_precision(y, prob)
    fpr, tpr = evaluation.roc_curve(y, prob)
    recall, precision = evaluation.pr_curve(y, prob)
    figures = {
        f"plots/{split}_confusion_matrix.png": plots.confusion_matrix(
            evaluation.confusion(y, prob), CLASS_NAMES, f"{title}, {who}"
        ),
        f"plots/{split}_roc.png": plots.roc(fpr, tpr, metrics["auc"], f"{title} ROC, {who}"),
        f"plots/{split}_precision_recall.png": plots.pr(
            recall,
            precision,
            metrics["average_precision"],
            float(np.mean(y)),
            f"{title} precision-recall, {who}",
        ),
    }
    if x is not None:
        wrong = evaluation.most_wrong(y, prob, MOST_WRONG)
        figures[f"plots/{split}_most_wrong.png"] = plots.wrong_grid(
            x[wrong],
            y[wrong],
            prob[wrong],
            CLASS_NAMES,
            f"{title} images {who} got most confidently wrong",
        )
    return SplitEvaluation(metrics, figures)


def _number(v: Any) -> Any:
    """Hyperparameters read back from MLflow are text; numbers become numbers again."""
    if isinstance(v, str):
        for kind in (int, float):
            try:
                return kind(v)
            except ValueError:
                continue
    return v


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def trials_csv(results: list[TrialRecord]) -> str:
    names = list(dict.fromkeys(k for r in results for k in r.hyperparameters))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["trial_id", "status", "score", "seconds", "run_id", *names, "reason", "pruned"]
    )
    for r in results:
        writer.writerow(
            [
                r.trial_id,
                r.status,
                "" if r.score is None else f"{r.score:.6g}",
                f"{r.seconds:.1f}",
                r.run_id or "",
                *[r.hyperparameters.get(n, "") for n in names],
                r.reason or "",
                r.pruned or "",
            ]
        )
    return buffer.getvalue()


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:13px} table{border-collapse:collapse;font-size:12px;margin-top:8px}
th,td{border:1px solid #ddd;padding:4px 7px;text-align:right;white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0} td.text{text-align:left}
tr.best td{background:#e8f5e9;font-weight:600} tr.failed td{color:#a00}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start} img{max-width:100%;border:1px solid #eee}
.note{font-size:12px;color:#555;max-width:900px}
"""


def _page(
    name, tuner, objective, maximize, results, best, test, weights, data, stopped, images
) -> str:
    def img(path: str, alt: str) -> str:
        if path not in images:
            return ""
        data_uri = base64.b64encode(images[path]).decode()
        return f'<img src="data:image/png;base64,{data_uri}" alt="{html.escape(alt)}">'

    e = html.escape
    finished = sorted(
        (r for r in results if r.score is not None), key=lambda r: r.score, reverse=maximize
    )
    failed = [r for r in results if r.score is None]
    pruned = sum(r.pruned is not None for r in finished)
    names = list(dict.fromkeys(k for r in results for k in r.hyperparameters))
    head = "".join(
        f"<th>{e(n)}</th>" for n in ["rank", "trial", objective, "seconds", *names, "status"]
    )
    rows = []
    for rank, r in enumerate([*finished, *failed], start=1):
        cls = "best" if best and r.run_id == best.run_id else ("failed" if r.score is None else "")
        score = "" if r.score is None else f"{r.score:.4f}"
        cells = [
            str(rank) if r.score is not None else "",
            f"trial-{r.trial_id}",
            score,
            f"{r.seconds:.0f}",
        ]
        cells += [_fmt(r.hyperparameters.get(n, "")) for n in names]
        status = r.status if not r.reason else f"{r.status}: {r.reason}"
        if r.pruned:
            status = f"{r.status}, pruned: {r.pruned}"
        tds = "".join(f"<td>{e(c)}</td>" for c in cells) + f'<td class="text">{e(status)}</td>'
        rows.append(f'<tr class="{cls}">{tds}</tr>')
    best_line = (
        f"best: trial-{e(best.trial_id)} with {e(objective)} {best.score:.4f}"
        if best
        else "no trial finished"
    )
    test_line = ""
    if test:
        shown = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in test.items())
        test_line = f"<p><b>Best model on the held-out test split</b> (never used for selection): {e(shown)}</p>"
    split = ", ".join(f"{s} {data.get(f'{s}_images', '?')}" for s in ("train", "val", "test"))
    importance_note = (
        ", ".join(f"{e(k)} {v:.2f}" for k, v in list(weights.items())[:5]) or "not enough trials"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>happysad sweep {e(name)}</title><style>{
        _STYLE
    }</style></head>
<body>
<h1>Sweep {e(name)}</h1>
<p class="meta">{e(tuner)} search of {len(results)} trials ({len(finished)} finished{
        f" of which {pruned} pruned" if pruned else ""
    }, {len(failed)} failed){" &middot; " + e(stopped) if stopped else ""} &middot; objective {
        e(objective)
    } ({"higher" if maximize else "lower"}
is better) &middot; data {e(str(data.get("path", "?")))}, digest {
        e(str(data.get("digest", "?")))
    }: {e(split)}
&middot; report made {datetime.now():%Y-%m-%d %H:%M}</p>
<p>{best_line}</p>
{test_line}
<h2>Trials, best first</h2>
<table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>
<h2>Hyperparameters against the objective</h2>
<div class="figs">{img("plots/parallel_coordinates.png", "parallel coordinates")}
{img("plots/objective_per_trial.png", "objective per trial")}</div>
<h2>How much each hyperparameter mattered</h2>
<div class="figs">{img("plots/hyperparameter_importance.png", "hyperparameter importance")}</div>
<p class="note">The share of the objective's spread across trials that each hyperparameter explains on its
own (eta squared; numbers grouped by quartile). It ignores interactions and is noisy with few trials:
read it as a hint of where to look. Top: {importance_note}.</p>
<h2>The best model on the test split</h2>
<div class="figs">{img("plots/test_confusion_matrix.png", "test confusion matrix")}
{img("plots/test_roc.png", "test ROC")}{
        img("plots/test_precision_recall.png", "test precision-recall")
    }</div>
</body></html>
"""


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
