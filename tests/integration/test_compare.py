"""compare: a sweep's top trials, and sweeps side by side, from the store."""

from __future__ import annotations

from happysad import compare


def test_compare_prints_the_top_trials_and_sweeps_side_by_side(
    finished_sweeps, tmp_path, monkeypatch, capsys
):
    uri = finished_sweeps.uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert compare.main([]) == 0
    latest = capsys.readouterr().out
    assert latest.startswith(
        "sweep 'tiny': 2 best of 2 finished trials; test split of the best: accuracy"
    )
    assert "trial-0" in latest and "trial-1" in latest and "model.depth" in latest
    # The trial at learning rate 0 was pruned: counted and shown apart.
    assert compare.main(["good"]) == 0
    good = capsys.readouterr().out
    assert good.startswith("sweep 'good': 3 best of 3 finished trials (1 of them pruned);")
    (pruned,) = [line for line in good.splitlines() if "epoch 4 (median)" in line]
    assert pruned.split()[:2] == ["3", "trial-2"]  # ranked last, as its score says
    assert compare.main(["good", "bad"]) == 0
    both = capsys.readouterr().out.splitlines()
    assert both[0].split() == ["good", "bad"]
    assert any(line.startswith("test_accuracy") for line in both)
    assert compare.main(["nowhere"]) == 2
    assert "no sweep named 'nowhere'" in capsys.readouterr().err
    # One rule for the store in every command: the command line, else the variable.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert compare.main(["good"]) == 2  # no ./mlruns here
    assert "no MLflow store at" in capsys.readouterr().err
    assert compare.main(["good", "--tracking-uri", uri]) == 0
    assert f"MLflow store: {uri}" in capsys.readouterr().err
