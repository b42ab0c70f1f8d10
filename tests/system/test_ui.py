"""The MLflow UI as a user sees it: `python -m happysad.ui` over a real sweep, its
password asked for, in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import (
    descendants,
    free_port,
    http_status,
    wait_for_http,
    wait_until_gone,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def ui(finished_sweeps):
    """`python -m happysad.ui` over the session's finished sweeps on a free loopback port:
    its address, the newest sweep (`tiny`, two trials), the password and what it printed."""
    store_uri, result = finished_sweeps.uri, finished_sweeps.latest
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "happysad.ui", "--port", str(port)],
        env={**os.environ, "MLFLOW_TRACKING_URI": store_uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(4)]
        # The server's request log after them, read on so that the pipe never fills.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        password_file = Path(lines[2].split(" password in ")[1].split(" (only you")[0])
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health", process)
        yield UI(base, result, password_file.read_text(), password_file, lines)
    finally:
        process.terminate()
        process.wait(timeout=90)  # its server group stopped, on a busy machine too
    assert not password_file.exists()  # removed with the server


@dataclass
class UI:
    base: str
    result: object
    password: str
    password_file: Path
    lines: list[str]


def _api(ui: UI, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{ui.base}/api/2.0/mlflow/{path}",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic "
            + base64.b64encode(f"happysad:{ui.password}".encode()).decode(),
        },
    )
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def test_the_rest_api_shows_the_sweep_and_its_trials(ui):
    result = ui.result
    runs = _api(
        ui,
        "runs/search",
        {
            "experiment_ids": [result.experiment_id],
            "filter": f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
        },
    )["runs"]
    assert sorted(r["info"]["run_name"] for r in runs) == ["trial-0", "trial-1"]
    for run in runs:
        params = {p["key"] for p in run["data"]["params"]}
        metrics = {m["key"] for m in run["data"]["metrics"]}
        assert {
            "model.depth",
            "model.filters.0",
            "optimizer.learning_rate",
            "data.batch_size",
        } <= params
        assert {"val_accuracy", "val_loss", "objective", "epoch_time"} <= metrics
        assert run["info"]["status"] == "FINISHED"


def test_the_runs_table_shows_the_sweep_and_its_trials_in_chromium(ui, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: apt-get install chromium (.ci/run does)")
    shots = tmp_path_factory.mktemp("screenshots")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            # The user and password, as a person types them when the browser asks.
            page = browser.new_page(
                viewport={"width": 1600, "height": 1000},
                http_credentials={"username": "happysad", "password": ui.password},
            )
            page.goto(f"{ui.base}/#/experiments/{ui.result.experiment_id}/runs")
            sweep_cell = page.get_by_text("tiny", exact=True).first
            sweep_cell.wait_for(timeout=90_000)
            # Trials are nested under their sweep: open its row.
            row = page.locator("[role=row]", has=sweep_cell)
            row.get_by_role("button").first.click()
            for trial in ("trial-0", "trial-1"):
                page.get_by_text(trial, exact=True).first.wait_for(timeout=30_000)
            shot = shots / "runs-table.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


def test_ui_names_the_latest_sweep_and_lets_in_only_its_user(ui):
    """Another user of the machine reaches the port but not the UI, its API or its
    artifacts; the password is in a file only the owner can read, never printed."""
    port = ui.base.rsplit(":", 1)[1]
    assert ui.lines[1].strip() == (
        f"the latest sweep: http://127.0.0.1:{port}/#/experiments/"
        f"{ui.result.experiment_id}/runs/{ui.result.parent_run_id}"
    )
    assert ui.password_file.stat().st_mode & 0o777 == 0o600
    assert ui.password_file.parent.stat().st_mode & 0o777 == 0o700
    assert len(ui.password) >= 24 and not any(ui.password in line for line in ui.lines)
    search = f"{ui.base}/ajax-api/2.0/mlflow/experiments/search?max_results=5"
    for url in (f"{ui.base}/", search, f"{ui.base}/api/2.0/mlflow-artifacts/artifacts"):
        assert http_status(url) == 401, url
    assert http_status(search, "not-the-password") == 401
    assert http_status(search, ui.password) == 200
    assert http_status(f"{ui.base}/", ui.password) == 200
    if os.geteuid() == 0:  # and as another user of the machine, for real (nobody)
        other = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
        read = subprocess.run([*other, "cat", str(ui.password_file)], capture_output=True)
        assert read.returncode != 0 and not read.stdout
        probe = (
            "import sys, urllib.error, urllib.request\n"
            "try:\n    urllib.request.urlopen(sys.argv[1])\n"
            "except urllib.error.HTTPError as err:\n    print(err.code)\n"
        )
        asked = subprocess.run(
            [*other, "/usr/bin/python3", "-c", probe, search], capture_output=True, text=True
        )
        assert asked.stdout.strip() == "401", asked.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_the_ui_command_stops_its_server_however_it_is_ended(tmp_path, store_uri, signum):
    """A supervisor's SIGTERM or a closed terminal's SIGHUP leaves no `mlflow ui` or
    uvicorn worker behind holding the port."""
    MlflowClient(store_uri).search_experiments()  # an empty store
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "happysad.ui", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": store_uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = [process.stdout.readline() for _ in range(3)]
    password_file = Path(lines[2].split(" password in ")[1].split(" (only you")[0])
    wait_for_http(f"http://127.0.0.1:{port}/health", process)
    started = descendants(process.pid)
    assert started, "the server runs in processes of its own"
    process.send_signal(signum)
    process.wait(timeout=60)
    wait_until_gone(started)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port is free again"
    assert not password_file.parent.exists()  # the password and the users' store
