"""The predict command on bad inputs, with a real logged model (the session's finished
`tiny` sweep): nothing hangs, nothing is lost, nothing is written over."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _command(finished_sweeps, *args: str) -> list[str]:
    model = finished_sweeps.latest.best.model_uri
    return [sys.executable, "-m", "happysad.predict", *args, "--model", model]


def _env(finished_sweeps) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": finished_sweeps.uri}


def _pictures(folder: Path, count: int) -> list[Path]:
    """`count` small grayscale pictures of noise, each classified whole."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8), "L").save(path)
        paths.append(path)
    return paths


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_bad_inputs_each_get_a_row_and_nothing_is_written_over(finished_sweeps, tmp_path):
    album = tmp_path / "album"
    (good,) = _pictures(album, 1)
    os.mkfifo(album / "pipe.png")
    (album / "loop").symlink_to(".")
    other = tmp_path / "other"
    other.mkdir()
    (other / "linked.png").write_bytes(good.read_bytes())
    (album / "elsewhere").symlink_to(other)
    odd = os.path.join(os.fsencode(album), b"caf\xe9.png")  # a name that is not UTF-8
    with open(odd, "wb") as f:
        f.write(good.read_bytes())
    out, seen = tmp_path / "out.csv", tmp_path / "seen"
    seen.mkdir()
    (seen / "00000.png").write_text("a file of the user's")
    done = subprocess.run(
        _command(
            finished_sweeps, str(album), "=1+2", "--annotate", str(seen), "--output", str(out)
        ),
        cwd=finished_sweeps.root,
        env=_env(finished_sweeps),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["path"].removeprefix(f"{album}/"): r for r in _rows(out)}
    assert list(rows) == [
        "00000.png",
        "caf\\xe9.png",  # the byte that is not UTF-8, as a backslash escape
        "elsewhere/linked.png",
        "pipe.png",
        "loop",
        "'=1+2",  # quoted: a spreadsheet shows it, does not run it
    ]
    assert all(rows[name]["label"] in ("happy", "sad") for name in list(rows)[:3])
    assert rows["pipe.png"]["error"] == "a named pipe (FIFO), not a picture file: not opened"
    assert rows["loop"]["error"] == "a link to a folder already listed: not entered again"
    assert "caf\\xe9.png" in done.stdout
    assert (seen / "00000.png").read_text() == "a file of the user's"
    assert "3 annotated pictures" in done.stderr
    assert sorted(os.listdir(os.fsencode(seen))) == [
        b"00000-1.png",
        b"00000.png",
        b"caf\xe9.png",
        b"linked.png",
    ]


def test_ctrl_c_keeps_the_rows_done_in_a_partial_file_and_the_old_file(finished_sweeps, tmp_path):
    _pictures(tmp_path / "many", 3000)
    out = tmp_path / "out.csv"
    out.write_text("the results of yesterday\n")
    log = tmp_path / "stderr.txt"
    with open(log, "w") as errors:
        run = subprocess.Popen(
            _command(finished_sweeps, str(tmp_path / "many"), "--output", str(out)),
            cwd=finished_sweeps.root,
            env=_env(finished_sweeps),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            first = run.stdout.readline()  # the first picture's line: the rows have begun
            assert first.split()[:1] == [str(tmp_path / "many" / "00000.png")], (
                first + log.read_text()[-2000:]
            )
            time.sleep(0.2)
            run.send_signal(signal.SIGINT)
            stdout = run.communicate(timeout=120)[0]
        finally:
            run.kill()
    stderr = log.read_text()
    assert run.returncode == 130, stderr[-2000:]
    partial = tmp_path / "out.csv.partial"
    said = re.search(
        rf"Interrupted: the (\d+) rows done so far are in {re.escape(str(partial))}; "
        rf"{re.escape(str(out))} was not changed\.",
        stderr,
    )
    assert said, stderr[-2000:]
    rows = _rows(partial)
    assert 1 <= len(rows) == int(said.group(1)) < 3000
    assert [Path(r["path"]).name for r in rows] == [f"{i:05d}.png" for i in range(len(rows))]
    assert all(r["label"] in ("happy", "sad") for r in rows)
    assert len((first + stdout).splitlines()) >= len(rows)
    assert out.read_text() == "the results of yesterday\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "many",
        "out.csv",
        "out.csv.partial",
        "stderr.txt",
    ]
