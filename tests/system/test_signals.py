"""Sweeps stopped from outside: Ctrl-C, SIGTERM and SIGHUP, a hard kill of the sweep, a trial's process killed."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.conftest import (
    by_status,
    descendants,
    process_tree,
    start_command,
    sweep_command,
    sweep_runs,
    wait_until_gone,
)


def _wait_for(process, text, limit=300):
    """Read the command's output until a line holds `text`; the lines read so far."""
    seen, started = [], time.monotonic()
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return seen
        if time.monotonic() - started > limit:
            break
    process.kill()
    raise AssertionError(f"never saw {text!r}:\n{''.join(seen[-40:])}")


def _grandchildren(pid: int) -> list[int]:
    """Live processes two generations below `pid`: a sweep's trial processes, forked
    by the server it started."""
    children = process_tree()
    return [g for c in children.get(pid, []) for g in children.get(c, [])]


def _wait_for_trial_process(pid: int, limit: float = 120) -> int:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = _grandchildren(pid)
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError("no trial process appeared")


def test_a_sweep_killed_in_a_trial_resumes_without_duplicates(tmp_path, image_cache):
    cmd = sweep_command(image_cache, "sweep.name=hard", "tuner.max_trials=3", "tuner.epochs=4")
    process = start_command(cmd, tmp_path)
    _wait_for(process, "trial 2 of 3")
    _wait_for(process, "epoch 1/4")
    training = _grandchildren(process.pid)
    assert training, "trial 2 should be training in its own process"
    process.send_signal(signal.SIGKILL)  # no chance to clean up: runs stay RUNNING
    process.wait(timeout=60)
    wait_until_gone(training)  # the trial's process does not train on for nobody
    parents, children = sweep_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert {r.info.status for r in parents + children} >= {"RUNNING"}

    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "marked KILLED the runs of trials interrupted earlier: trial-1" in done.stdout
    (parent,), children = sweep_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert parent.info.status == "FINISHED"
    assert by_status(children) == {
        "FINISHED": ["trial-0", "trial-1", "trial-2"],
        "KILLED": ["trial-1"],
    }


def test_a_trial_whose_process_dies_fails_alone_and_the_search_goes_on(tmp_path, image_cache):
    """A trial's process killed (SIGKILL, as the kernel's OOM killer does) or crashed
    (SIGSEGV, as TensorFlow's native code did in oneDNN) fails that trial alone, with one
    sentence: what died, the signal by name, where its log is. The trial recorded between
    them stays as it was."""
    cmd = sweep_command(image_cache, "tuner.max_trials=3", "tuner.epochs=3", "model.padding=same")
    process = start_command(cmd, tmp_path)
    _wait_for(process, "trial 1 of 3")
    _wait_for(process, "epoch 1/3")
    os.kill(_wait_for_trial_process(process.pid), signal.SIGKILL)
    between = "".join(_wait_for(process, "trial 3 of 3") + _wait_for(process, "epoch 1/3"))
    os.kill(_wait_for_trial_process(process.pid), signal.SIGSEGV)
    rest = process.communicate(timeout=300)[0]
    assert process.returncode == 0, rest
    crashed = "FAILED: trial-2's process died of SIGSEGV (Segmentation fault): a crash inside"
    assert crashed in rest and "trial-1 done in" in between
    _, children = sweep_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert by_status(children) == {"FAILED": ["trial-0", "trial-2"], "FINISHED": ["trial-1"]}
    runs = {c.info.run_name: c for c in children}
    killed, segfault = (runs[t].data.tags["happysad.failure"] for t in ("trial-0", "trial-2"))
    assert killed.startswith("trial-0's process died of SIGKILL (Killed): killed, most often")
    assert segfault.startswith("trial-2's process died of SIGSEGV (Segmentation fault)")
    log = segfault.split("; its log: ")[1]
    assert log.endswith("process.log") and "trial_2" in log and os.path.isfile(log)
    assert "objective" in runs["trial-1"].data.metrics  # the finished trial untouched


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_stops_cleanly_and_says_how_to_go_on(tmp_path, image_cache, signum):
    """Ctrl-C, a scheduler's SIGTERM and a closed terminal's SIGHUP end a sweep alike."""
    process = start_command(
        sweep_command(image_cache, "tuner.max_trials=3", "tuner.epochs=20"), tmp_path
    )
    _wait_for(process, "epoch 2/20")
    started = descendants(process.pid)
    assert _grandchildren(process.pid), "the trial trains in its own process"
    process.send_signal(signum)
    rest = process.communicate(timeout=60)[0]
    wait_until_gone(started)  # the fork server and the trial's process with it
    assert process.returncode == 130, rest
    assert (
        "To go on where it stopped: python -m happysad.sweep" in rest
        and "sweep.name=sweep-" in rest
    )
    parents, children = sweep_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert [p.info.status for p in parents] == ["KILLED"]
    assert [c.info.status for c in children] == ["KILLED"]
