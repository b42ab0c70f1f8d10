"""The MLflow UI as a user sees it: a real server over a real sweep, in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import (
    descendants,
    free_port,
    wait_for_http,
    wait_until_gone,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(finished_sweeps):
    """An MLflow server over the session's finished sweeps on a free loopback port, and
    the newest sweep (`tiny`, two trials)."""
    store_uri, result = finished_sweeps.uri, finished_sweeps.latest
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    process = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            store_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/health", process)
    yield base, result
    process.terminate()
    process.wait(timeout=30)


def _api(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def test_the_rest_api_shows_the_sweep_and_its_trials(server):
    base, result = server
    runs = _api(
        base,
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


def test_the_runs_table_shows_the_sweep_and_its_trials_in_chromium(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: apt-get install chromium (.ci/run does)")
    base, result = server
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
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{base}/#/experiments/{result.experiment_id}/runs")
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


def test_ui_starts_the_mlflow_ui_and_names_the_latest_sweep(finished_sweeps, tmp_path):
    store_uri, result = finished_sweeps.uri, finished_sweeps.latest
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "happysad.ui", "--port", str(port)],
        env={**os.environ, "MLFLOW_TRACKING_URI": store_uri},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[1].strip() == (
            f"the latest sweep: http://127.0.0.1:{port}/#/experiments/"
            f"{result.experiment_id}/runs/{result.parent_run_id}"
        )
        wait_for_http(f"http://127.0.0.1:{port}/", process)
    finally:
        process.terminate()
        process.wait(timeout=90)  # its server group stopped, on a busy machine too


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
    )
    wait_for_http(f"http://127.0.0.1:{port}/health", process)
    started = descendants(process.pid)
    assert started, "the server runs in processes of its own"
    process.send_signal(signum)
    process.wait(timeout=60)
    wait_until_gone(started)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port is free again"
