"""keras-tuner's oracle as happysad continues a sweep with it (real keras-tuner)."""

from __future__ import annotations

import keras_tuner as kt

from happysad.search import kt_internals


def test_a_trial_the_oracle_ended_but_the_sweep_never_recorded_runs_again(tmp_path):
    """A sweep stopped after the oracle ended a trial but before its run was ended
    FINISHED: when it continues, that trial is handed out again, once, before any new
    one; trials with a recorded run are not."""
    hp = kt.HyperParameters()
    hp.Int("x", 0, 1000)
    oracle = kt.oracles.RandomSearchOracle(
        objective=kt.Objective("score", "max"), max_trials=2, hyperparameters=hp, seed=1
    )
    oracle._set_project_dir(str(tmp_path), "sweep")
    first = oracle.create_trial("tuner0")
    oracle.update_trial(first.trial_id, {"score": 1.0})
    first.status = kt_internals.COMPLETED
    oracle.end_trial(first)

    assert kt_internals.retry_unrecorded(oracle, {first.trial_id}) == []
    assert kt_internals.retry_unrecorded(oracle, set()) == [first.trial_id]
    assert kt_internals.retry_unrecorded(oracle, set()) == []  # handed back once
    again = oracle.create_trial("tuner0")
    assert again.trial_id == first.trial_id and again.status == kt_internals.RUNNING
    assert again.hyperparameters.values == first.hyperparameters.values
    assert oracle.create_trial("tuner1").trial_id != first.trial_id  # then new ones
