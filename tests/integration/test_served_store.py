"""A local store served by mlflow server for many writers: writes over HTTP land in the same file."""

from __future__ import annotations

import pytest

from happysad.errors import StoreError
from happysad.tracking import names
from happysad.tracking.store import Store


def test_a_served_local_store_takes_writes_over_http_and_keeps_them(tmp_path, monkeypatch):
    """Many writers log through `mlflow server` over the local store, with the server's
    login only: what they write, artifacts included, is read back from the store's own
    file once the server is gone."""
    import socket

    from happysad.tracking.runs import create_run, log_params
    from happysad.tracking.server import serving

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    local = Store(uri)
    experiment_id = local.open_experiment("served")
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with serving(uri) as server:
        address = server.address
        assert address.startswith("http://127.0.0.1:")
        remote = Store(address)
        with pytest.raises(Exception, match="401"):
            create_run(remote, experiment_id, "no login", {names.ROLE: names.ROLE_TRIAL})
        for name, value in server.client_env.items():
            monkeypatch.setenv(name, value)
        run_id = create_run(remote, experiment_id, "over-http", {names.ROLE: names.ROLE_TRIAL})
        log_params(remote, run_id, {"model.depth": 3})
        remote.client.log_text(run_id, "written over http", "notes/a.txt")
        remote.client.set_terminated(run_id, names.FINISHED)
    port = int(address.rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the server outlived its block"
    run = local.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"model.depth": "3"}
    assert local.read_text(run_id, "notes/a.txt") == "written over http"
    with pytest.raises(StoreError, match="not a local SQLite store"):
        with serving(address):
            pass


def _killed_half_way(uri: str, create: str, statement: str) -> None:
    """A process that creates the store at `uri` (`create`: Python, given `uri`), held
    by SQLAlchemy's hook at `statement` of MLflow's real schema migrations, killed
    there (SIGKILL) as a power cut or an OOM kill would."""
    import signal
    import subprocess
    import sys

    child = f"""if True:
        import sys, time
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        def hold(conn, cursor, statement, *args):
            if {statement!r} in statement:
                print("half-way", flush=True)
                time.sleep(600)

        event.listen(Engine, "before_cursor_execute", hold)
        uri = sys.argv[1]
        {create}
    """
    process = subprocess.Popen(
        [sys.executable, "-c", child, uri], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "half-way"
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL


def test_a_store_creation_killed_half_way_leaves_no_store_and_the_next_command_works(tmp_path):
    """Killed half-way, MLflow's own creation leaves a store that never opens again
    (happysad says so in one sentence); happysad's leaves no store for the next command
    to trip on, only a hidden temporary file, removed once it is old."""
    import os
    import time

    plain = tmp_path / "plain" / "mlflow.db"
    plain.parent.mkdir()
    _killed_half_way(
        f"sqlite:///{plain}",
        "from mlflow.tracking import MlflowClient; MlflowClient(uri).search_experiments()",
        "INSERT INTO _alembic_tmp_experiments",
    )
    for _ in range(2):
        with pytest.raises(StoreError) as broken:
            Store(f"sqlite:///{plain}").open_experiment("happysad")
        assert "already exists): if a first run was stopped while it created the store, " in str(
            broken.value
        )
        assert str(broken.value).endswith(f"move {plain} aside and run again")

    db = tmp_path / "mlruns" / "mlflow.db"
    _killed_half_way(
        f"sqlite:///{db}",
        "from happysad.tracking.store import Store; Store(uri).open_experiment('happysad')",
        "INSERT INTO _alembic_tmp_experiments",
    )
    left = list(db.parent.iterdir())  # the temporary file, and SQLite's journal of it
    assert left and all(p.name.startswith(".mlflow.db.") and ".creating" in p.name for p in left)
    old = time.time() - 3600
    for path in left:
        os.utime(path, (old, old))
    store = Store(f"sqlite:///{db}")
    experiment = store.open_experiment("happysad")
    assert store.experiment_id("happysad") == experiment
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db"]
