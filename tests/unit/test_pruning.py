"""Pruning's rules on recorded histories, and the settings they refuse."""

from __future__ import annotations

import pytest

from happysad.config.schema import Pruning
from happysad.config.validation import validate
from happysad.errors import ConfigError
from happysad.search.pruning import decide, rungs
from tests.conftest import typed_config

ACC = {"objective": "val_accuracy", "maximize": True, "warmup": 2, "eta": 3, "epochs": 10}


def test_median_stops_a_trial_below_the_others_median_after_the_warmup():
    others = [[0.6, 0.7, 0.8], [0.55, 0.65, 0.75], [0.5, 0.9]]
    assert decide(Pruning.median, [0.5], others, **ACC) is None  # still warming up
    pruned = decide(Pruning.median, [0.5, 0.52], others, **ACC)
    # The others' best up to epoch 2: 0.7, 0.65, 0.9 -> median 0.7.
    assert pruned is not None and pruned.epoch == 2 and pruned.rule == "median"
    assert "0.5200" in pruned.text and "median 0.7000 of 3 other trials" in pruned.text
    assert decide(Pruning.median, [0.5, 0.71], others, **ACC) is None
    # Never at the last epoch, where stopping saves nothing; never on one rival alone.
    assert decide(Pruning.median, [0.5, 0.52], others, **{**ACC, "epochs": 2}) is None
    assert decide(Pruning.median, [0.5, 0.52], others[:1], **ACC) is None
    assert decide(Pruning.none, [0.5, 0.52], others, **ACC) is None


def test_median_of_a_loss_stops_the_higher_one():
    loss = {**ACC, "objective": "val_loss", "maximize": False}
    others = [[0.7, 0.5], [0.69, 0.4]]
    pruned = decide(Pruning.median, [0.7, 0.69], others, **loss)
    assert pruned is not None and "above the median 0.4500" in pruned.text
    assert decide(Pruning.median, [0.7, 0.3], others, **loss) is None


def test_asha_keeps_only_the_top_third_at_each_rung():
    assert rungs(2, 3, 20) == [2, 6, 18] and rungs(1, 2, 5) == [1, 2, 4]
    others = [[0.6, 0.8], [0.6, 0.7]]
    pruned = decide(Pruning.asha, [0.5, 0.75], others, **ACC)
    assert pruned is not None and pruned.rule == "asha"
    assert "ranks 2 of 3 trials" in pruned.text and "only the top 1 go on" in pruned.text
    assert decide(Pruning.asha, [0.5, 0.85], others, **ACC) is None
    # Between rungs nobody is judged; at the next rung, against those that reached it.
    assert decide(Pruning.asha, [0.5, 0.5, 0.5], others, **ACC) is None
    six = [[0.9] * 6, [0.8] * 6, [0.7] * 6, [0.6] * 6, [0.5] * 6]
    # Six trials at the rung of epoch 6: the top two go on.
    assert decide(Pruning.asha, [0.85] * 6, six, **ACC) is None
    assert "ranks 3 of 6" in decide(Pruning.asha, [0.75] * 6, six, **ACC).text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["tuner=hyperband", "tuner.pruning=median"],
            "tuner.pruning=median cannot be combined with tuner=hyperband",
        ),
        (["tuner.pruning=asha", "tuner.pruning_eta=1"], "tuner.pruning_eta=1 must be at least 2"),
        (["tuner.pruning=median", "tuner.pruning_warmup=0"], "tuner.pruning_warmup=0 must be"),
    ],
)
def test_pruning_settings_that_cannot_work_are_one_sentence(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(typed_config(overrides))


def test_a_continued_sweep_judges_against_the_histories_its_store_recorded(tmp_path):
    """Two trials recorded by one process; a new process (a continued sweep, or another
    worker) that reopens the sweep judges its trial against them, and ignores failed
    and killed trials."""
    from happysad.search.pruning import Pruner
    from happysad.tracking import names
    from happysad.tracking.runs import SweepRun
    from happysad.tracking.store import Store

    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = store.open_experiment("happysad")
    summary = {"path": str(tmp_path), "digest": "d1"}
    first = SweepRun(store, experiment_id, "s")
    run_id = first.start(
        config_yaml="a: 1\n",
        overrides=[],
        params={},
        data_summary=summary,
        skipped=[],
        search_space={},
    )
    for trial, history, status in [
        ("0", [0.6, 0.7, 0.8], names.FINISHED),
        ("1", [0.6, 0.75], names.FINISHED),
        ("2", [0.99, 0.99], names.FAILED),
    ]:
        first.start_trial(trial, {})
        for epoch, v in enumerate(history):
            first.log_epoch({"val_accuracy": v, "loss": 1.0}, epoch)
        first.end_trial(status)
    again = SweepRun(Store(store.uri), experiment_id, "s")
    again.join(run_id, summary)
    again.start_trial("3", {})
    cfg = typed_config(["tuner.pruning=median", "tuner.pruning_warmup=2"])
    pruner = Pruner(cfg, again)
    recorded = [r.run_id for r in first.previous_trials()]
    assert again.trial_histories("val_accuracy") == {
        recorded[0]: [0.6, 0.7, 0.8],
        recorded[1]: [0.6, 0.75],
    }
    assert pruner.judge([0.5], epochs=10) is None  # warming up
    pruned = pruner.judge([0.5, 0.6], epochs=10)
    assert pruned is not None and "median 0.7250 of 2 other trials" in pruned.text
    assert pruner.judge([0.5, 0.8], epochs=10) is None


def test_a_sweep_may_be_continued_with_pruning_turned_on():
    from happysad.search.resume import changes, fingerprint

    before = fingerprint(typed_config([]), "d1")
    after = fingerprint(typed_config(["tuner.pruning=asha", "tuner.pruning_warmup=3"]), "d1")
    assert changes(before, after) == []
