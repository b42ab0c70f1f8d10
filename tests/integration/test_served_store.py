"""A local store served by mlflow server for many writers: writes over HTTP land in the same file."""

from __future__ import annotations

import pytest

from happysad.errors import StoreError
from happysad.tracking import names
from happysad.tracking.store import Store


def test_a_served_local_store_takes_writes_over_http_and_keeps_them(tmp_path):
    """Many writers log through `mlflow server` over the local store: what they write,
    artifacts included, is read back from the store's own file once the server is gone."""
    import socket

    from happysad.tracking.runs import create_run, log_params
    from happysad.tracking.server import serving

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    local = Store(uri)
    experiment_id = local.open_experiment("served")
    with serving(uri) as address:
        assert address.startswith("http://127.0.0.1:")
        remote = Store(address)
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
