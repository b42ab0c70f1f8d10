"""Distributed sweeps: keras-tuner's own distributed mode, with real worker processes,
a real MLflow tracking server over the sweep's SQLite store, and real kills."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from happysad.config.schema import HEARTBEAT
from happysad.sweep import run_sweep
from happysad.tracking.names import BUDGET
from happysad.tracking.store import Store
from tests.conftest import (
    compose_config,
    descendants,
    http_status,
    process_tree,
    running_parent,
    start_command,
    sweep_command,
    wait_until_gone,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


def _runs(uri: str):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("happysad").experiment_id])
    parents = [r for r in runs if r.data.tags.get("happysad.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("happysad.role") == "trial"]
    return parents, children


def _four_trials_by_two_workers(uri: str):
    """The sweep's run and its four trial runs, each FINISHED, nested, tagged with the
    worker that trained it; both workers trained (each takes a trial as soon as it
    asks, and a first trial takes far longer than a worker's start)."""
    (parent,), children = _runs(uri)
    assert parent.info.status == "FINISHED"
    assert sorted(c.info.run_name for c in children) == [f"trial-{i}" for i in range(4)]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["happysad.worker"] for c in children} == {"tuner0", "tuner1"}
    return parent, children


def test_two_local_workers_prune_a_trial_that_cannot_learn(tiny, store_uri):
    """Grid order: two learning rates that learn, one on each worker, then 0, which
    cannot; the worker that trains it judges it (median) against what the other
    worker's trials recorded in the sweep's store."""
    result = run_sweep(
        compose_config(
            [
                *tiny[2:],  # the store and the folders, not debug=tiny: this network learns
                "distributed=local",
                "experiment=seed_baseline",
                "data.num_images=1200",
                "model.depth.value=2",
                "model.filters=[{value:32},{value:64}]",
                "tuner.epochs=6",
                "tuner=grid",
                "tuner.max_trials=3",
                "optimizer.learning_rate.value=null",
                "optimizer.learning_rate.choices=[0.002,0.0015,0.0]",
                "tuner.pruning=median",
                "tuner.pruning_warmup=4",
                "sweep.name=prune",
            ]
        )
    )
    (parent,), children = _runs(store_uri)
    runs = {c.info.run_name: c for c in children}
    assert {c.info.status for c in children} == {"FINISHED"} and len(runs) == 3
    assert {c.data.tags["happysad.worker"] for c in children} == {"tuner0", "tuner1"}
    assert runs["trial-2"].data.params["optimizer.learning_rate"] == "0.0"
    tag = runs["trial-2"].data.tags["happysad.pruned"]
    assert tag.startswith("epoch 4, rule median") and "of 2 other trials" in tag
    assert not any("happysad.pruned" in runs[t].data.tags for t in ("trial-0", "trial-1"))
    history = MlflowClient(store_uri).get_metric_history(runs["trial-2"].info.run_id, "loss")
    assert len(history) == 4
    assert [r.trial_id for r in result.results if r.pruned] == ["2"]
    assert parent.data.metrics["trials_pruned"] == 1


def test_two_local_workers_record_every_trial_under_one_sweep(tiny, store_uri, tmp_path, caplog):
    """And through a restart of the sweep's tracking server: SIGKILL to its whole group
    (the mlflow command and its uvicorn) while both workers train; the chief starts it
    again on the same store and port, the trials' logging is retried meanwhile, and
    every trial ends FINISHED exactly once with every epoch's metrics and its model."""
    caplog.set_level(logging.INFO, logger="happysad")
    killed: list[int] = []

    def kill_the_server() -> None:
        _wait_for_text(tmp_path / "sweeps/two/workers/tuner1.log", "epoch 1/")
        servers = [p for p in descendants(os.getpid()) if b"basic-auth" in _cmdline(p)]
        killed.extend([*servers, *(q for p in servers for q in descendants(p))])
        os.killpg(os.getpgid(servers[0]), signal.SIGKILL)

    killer = threading.Thread(target=kill_the_server, daemon=True)
    killer.start()
    cfg = compose_config(
        [
            *tiny,
            "distributed=local",
            "tuner.max_trials=4",
            "tuner.early_stopping_patience=0",
            "sweep.name=two",
        ]
    )
    result = run_sweep(cfg)
    killer.join(timeout=5)

    assert len(killed) >= 2, killed  # the mlflow command and its uvicorn
    restarted = "the sweep's MLflow tracking server died of SIGKILL (Killed): started again"
    assert restarted in caplog.text
    parent, children = _four_trials_by_two_workers(store_uri)
    client = MlflowClient(store_uri)
    epochs = cfg.tuner.epochs
    for trial in children:  # every epoch once, the outage's included
        steps = sorted(m.step for m in client.get_metric_history(trial.info.run_id, "val_loss"))
        assert steps == list(range(steps[0], steps[0] + epochs)), (trial.info.run_name, steps)
        model_id = trial.data.tags["happysad.model_uri"].removeprefix("models:/")
        assert str(client.get_logged_model(model_id).status) == "READY", trial.info.run_name
    assert len(result.results) == 4 and result.best is not None
    assert parent.data.tags["happysad.best_run_id"] == result.best.run_id
    model = Store(store_uri).load_keras(result.best.model_uri)  # logged over HTTP, read here
    assert model.output_shape == (None, 1)
    assert "test_accuracy" in result.test_metrics
    # promote and compare work on it as on a local sweep.
    from omegaconf import OmegaConf

    from happysad.compare import top_trials
    from happysad.config.composition import compose
    from happysad.promote import promote

    promoted = promote(
        OmegaConf.to_object(
            compose([f"mlflow.tracking_uri={store_uri}", "sweep.name=two"], name="promote")
        )
    )
    assert promoted.promoted and promoted.registered
    assert "trial-" in top_trials(Store(store_uri), parent, 4)
    for worker in ("tuner0", "tuner1"):
        assert (
            "the search has ended"
            in (tmp_path / "sweeps/two/workers" / f"{worker}.log").read_text()
        )


def test_a_time_budget_stops_every_worker_at_the_chiefs_deadline(tiny, store_uri):
    # Trials far longer than the budget (no early stop): each worker's first trial runs
    # into the deadline, and none starts after it.
    cfg = compose_config(
        [
            *tiny,
            "distributed=local",
            "tuner.max_trials=20",
            "tuner.epochs=5000",
            "tuner.early_stopping_patience=0",
            "tuner.time_budget=60s",
            "sweep.name=budget",
        ]
    )
    result = run_sweep(cfg)

    assert result.budget_ended.startswith("the time budget (60s) ended the search")
    (parent,), children = _runs(store_uri)
    assert parent.info.status == "FINISHED" and "ended the search" in parent.data.tags[BUDGET]
    deadline = float(parent.data.tags["happysad.deadline"])
    assert len(children) == len(result.results) == 2
    assert {c.data.tags["happysad.worker"] for c in children} == {"tuner0", "tuner1"}
    for trial in children:
        assert trial.info.status == "FINISHED"
        assert trial.data.tags[BUDGET].startswith("the time budget stopped it after")
        # It stopped at the deadline: after its last whole epoch that fit, plus recording
        # (its plots and model: 31 s once on a 2-core machine at load 11).
        start, end = trial.info.start_time / 1000, trial.info.end_time / 1000
        assert start < deadline and deadline - 10 < end < deadline + 60


def _listening(pids: list[int]) -> list[tuple[str, str, int]]:
    """The TCP sockets these processes listen on: (process name, address, port)."""
    inodes = {}
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = name
        except OSError:  # ended meanwhile
            continue
    found = []
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state, inode = (row.split()[i] for i in (1, 3, 9))
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            ip, port = local.split(":")
            raw = bytes.fromhex(ip)  # 32-bit words, each in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(raw)
            address = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1
            found.append((inodes[inode], str(address), int(port, 16)))
    return found


_CALLS = """
import json, sys
import grpc
address, method = sys.argv[1:3]
token = sys.stdin.read()
codes = {}
with grpc.insecure_channel(address) as channel:
    call = channel.unary_unary(method)
    for which, metadata in (
        ("none", []),
        ("wrong", [("authorization", "Bearer " + "0" * 64)]),
        ("right", [("authorization", "Bearer " + token)]),
    ):
        try:
            call(b"", metadata=metadata, timeout=30)
            codes[which] = "OK"
        except grpc.RpcError as e:
            codes[which] = e.code().name
print(json.dumps(codes))
"""


def _refused_without_token(address: str, method: str, token: str) -> dict[str, str]:
    """A raw gRPC call to one of Ray's servers with no token, a wrong one and the right
    one, from a process of its own (gRPC's threads in this one would be forked into the
    processes later tests start; the token on its stdin): the status of each."""
    out = subprocess.run(
        [sys.executable, "-c", _CALLS, address, method],
        input=token,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_two_ray_actors_record_every_trial_under_one_sweep(tiny, store_uri, tmp_path):
    """distributed=ray with a Ray started for the sweep (and stopped after it): on
    loopback only, with a token of its own that every request must carry."""
    import ray

    home_token = Path.home() / ".ray" / "auth_token"
    home_before = home_token.stat().st_mtime if home_token.exists() else None
    saw: dict = {"listening": set(), "cmdlines": []}
    running = threading.Event()
    running.set()

    def watch() -> None:  # while the sweep runs, in this process (the chief)
        while running.is_set():
            pids = [os.getpid(), *descendants(os.getpid())]
            saw["listening"] |= set(_listening(pids))
            if "codes" not in saw and ray.is_initialized() and ray.nodes():
                token_path = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
                token = token_path.read_text()
                saw["modes"] = (token_path.stat().st_mode, token_path.parent.stat().st_mode)
                saw["token"] = token
                saw["session"] = Path(ray.nodes()[0]["ObjectStoreSocketName"]).parents[1]
                saw["codes"] = {
                    "gcs": _refused_without_token(
                        ray.get_runtime_context().gcs_address,
                        "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
                        token,
                    ),
                    "raylet": _refused_without_token(
                        f"127.0.0.1:{ray.nodes()[0]['NodeManagerPort']}",
                        "/ray.rpc.NodeManagerService/GetSystemConfig",
                        token,
                    ),
                }
            for pid in pids:
                try:
                    saw["cmdlines"].append(Path(f"/proc/{pid}/cmdline").read_bytes())
                except OSError:
                    pass
            time.sleep(1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    settings = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    cfg = compose_config([*tiny, "distributed=ray", "tuner.max_trials=4", "sweep.name=ray"])
    try:
        result = run_sweep(cfg)
    finally:
        running.clear()
        watcher.join()

    _four_trials_by_two_workers(store_uri)
    assert result.best is not None and not ray.is_initialized()
    log = (tmp_path / "sweeps/ray/workers/tuner0.log").read_text()
    assert "the search has ended" in log
    # Every port of Ray's processes and of the chief is on loopback.
    names = {name for name, _, _ in saw["listening"]}
    assert {"gcs_server", "raylet"} <= names, saw["listening"]
    outside = [s for s in saw["listening"] if not ipaddress.ip_address(s[1]).is_loopback]
    assert not outside, f"listening beyond loopback: {outside}"
    # A request without the token, or with a wrong one, is refused; the token works.
    for server in ("gcs", "raylet"):
        assert saw["codes"][server] == {
            "none": "UNAUTHENTICATED",
            "wrong": "UNAUTHENTICATED",
            "right": "OK",
        }, saw["codes"]
    # The token: readable by its owner only, then gone; never on a command line, in a
    # log (the sweep's, Ray's) or an artifact; the user's own Ray settings untouched.
    token = saw["token"].encode()
    assert len(token) == 64 and saw["modes"][0] & 0o777 == 0o600
    assert saw["modes"][1] & 0o777 == 0o700
    assert not any(token in c for c in saw["cmdlines"])
    for folder in (tmp_path, saw["session"]):
        leaked = [f for f in folder.rglob("*") if f.is_file() and token in f.read_bytes()]
        assert not leaked, f"the token is in {leaked}"
    assert {k: os.environ.get(k) for k in settings} == settings
    assert (home_token.stat().st_mtime if home_token.exists() else None) == home_before


def _chief(cache: Path, *extra: str) -> list[str]:
    return sweep_command(
        cache,
        "distributed=local",
        "sweep.name=faults",
        "tuner.max_trials=5",
        "tuner.epochs=3",
        *extra,
    )


def _worker_pid(chief: int, worker: str, limit: float = 120) -> int:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for pid in descendants(chief):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"happysad.worker" in cmdline and worker.encode() in cmdline:
                return pid
        time.sleep(0.1)
    raise AssertionError(f"worker {worker} never started")


def _wait_for_text(path: Path, text: str, after: int = 0, limit: float = 180) -> int:
    """Until the file holds `text` past offset `after`; returns where it was found."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        found = content.find(text, after)
        if found >= 0:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{path} never showed {text!r}:\n{content[-2000:]}")


def test_a_killed_worker_and_a_killed_chief_lose_no_trial(tmp_path, image_cache):
    """SIGKILL a worker in a trial: the chief starts it again under its id and it takes
    that trial back. Then SIGKILL the chief: the same command continues the sweep."""
    cmd = _chief(image_cache)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    chief = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    log0 = tmp_path / "outputs/sweeps/faults/workers/tuner0.log"
    try:
        worker = _worker_pid(chief.pid, "tuner0")
        _wait_for_text(log0, "epoch 1/3")
        os.kill(worker, signal.SIGKILL)
        restarted = _wait_for_text(log0, "happysad worker tuner0", after=1)
        _wait_for_text(log0, "epoch 1/3", after=restarted)  # training again
        started = descendants(chief.pid)
        chief.send_signal(signal.SIGKILL)
        first = chief.communicate(timeout=60)[0]
    finally:
        chief.kill()
    wait_until_gone(started, limit=90)  # workers, their trials and the server go with it
    assert "worker tuner0 died of SIGKILL (Killed)" in first and "started again (1 of 3)" in first

    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (parent,), children = _runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert parent.info.status == "FINISHED"
    finished = Counter(c.info.run_name for c in children if c.info.status == "FINISHED")
    assert finished == Counter(f"trial-{i}" for i in range(5))  # each exactly once
    killed = [c for c in children if c.info.status == "KILLED"]
    assert any(
        "worker tuner0 died of SIGKILL (Killed)" in c.data.tags["happysad.failure"] for c in killed
    )
    assert not [c for c in children if c.info.status == "RUNNING"]
    assert "trials recorded so far" in done.stdout


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def test_a_silent_worker_of_another_machine_is_given_up_on_and_its_trial_with_it(
    tmp_path, image_cache
):
    """A worker the chief did not start (a scheduler's), SIGKILLed in a trial: once its
    heartbeat has been missing for distributed.worker_timeout the chief marks its run
    KILLED and ends the sweep with the trials its own worker trained; while it trained,
    its heartbeat kept the chief waiting past that timeout."""
    cmd = sweep_command(
        image_cache,
        "distributed=local",
        "distributed.workers=1",
        "distributed.worker_timeout=15",
        "sweep.name=silent",
        "tuner.max_trials=8",
        "tuner.epochs=3",
    )
    chief = start_command(cmd, tmp_path)
    external = None
    try:
        for line in chief.stdout:
            if "more join with: " in line:
                break
        join = line.split("more join with: ")[1].split(" --id ")[0].split()
        assert join[:3] == ["python", "-m", "happysad.worker"], line
        # The sweep's own tracking server lets in only its user, whose password is in a
        # file only the owner can read, and never on the line.
        tracking = join[join.index("--tracking-uri") + 1]
        password_file = Path(line.split(" from ")[-1].split(", which only you")[0])
        assert password_file.stat().st_mode & 0o777 == 0o600
        password = password_file.read_text()
        assert password not in line and len(password) >= 24
        login = {"MLFLOW_TRACKING_USERNAME": "happysad", "MLFLOW_TRACKING_PASSWORD": password}
        assert http_status(f"{tracking}/api/2.0/mlflow/experiments/search?max_results=1") == 401
        assert http_status(f"{tracking}/ajax-api/2.0/mlflow/runs/search", "wrong") == 401
        assert (
            http_status(f"{tracking}/api/2.0/mlflow/experiments/search?max_results=1", password)
            == 200
        )
        log = tmp_path / "tuner9.log"
        long_trials = ["tuner.epochs=5000", "tuner.early_stopping_patience=0"]
        with open(log, "w") as out:  # its trials far longer than the sweep's
            external = subprocess.Popen(
                [sys.executable, *join[1:], "--id", "tuner9", *long_trials],
                env={**os.environ, **login},
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_for_text(log, "epoch 1/5000")
        time.sleep(20)  # longer than worker_timeout: its heartbeat keeps it in the sweep
        killed_at = time.time()
        os.killpg(external.pid, signal.SIGKILL)
        out = chief.communicate(timeout=300)[0]
    finally:
        chief.kill()
        if external is not None and external.poll() is None:
            os.killpg(external.pid, signal.SIGKILL)
    assert chief.returncode == 0, out[-3000:]
    assert not password_file.exists()  # gone with the server
    assert "worker tuner9 has not been heard from for 15 s during trial-" in out
    assert "the search ended without trial-" in out
    (parent,), children = _runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert parent.info.status == "FINISHED"
    (lost,) = [c for c in children if c.data.tags["happysad.worker"] == "tuner9"]
    assert lost.info.status == "KILLED"
    assert "its worker tuner9 was not heard from for 15 s" in lost.data.tags["happysad.failure"]
    # Given up on only once silent for 15 s (counted from its last heartbeat, at most
    # HEARTBEAT before the kill), though its trial had run for longer than that.
    assert lost.info.end_time / 1000 > killed_at + 15 - HEARTBEAT - 1
    assert lost.info.start_time / 1000 < killed_at - 20
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 7 and {c.data.tags["happysad.worker"] for c in finished} == {"tuner0"}


def _join(
    chief: str, tracking_uri: str, timeout: float, login: dict | None = None
) -> subprocess.CompletedProcess:
    """python -m happysad.worker for a sweep that is not there."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "happysad.worker", "--chief", chief),
            *("--tracking-uri", tracking_uri, "--sweep-run", "0" * 32, "--id", "tuner0"),
            *("--connect-timeout", str(timeout)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")},
            **(login or {}),
        },
    )


def test_a_worker_that_cannot_reach_the_chief_says_so_within_its_timeout(store_uri):
    from happysad.processes import free_port
    from happysad.tracking.server import serving

    with serving(store_uri) as served:
        started = time.monotonic()
        done = _join(f"127.0.0.1:{free_port()}", served.address, 3, served.client_env)
        refused = _join(f"127.0.0.1:{free_port()}", served.address, 3)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot reach the sweep's chief (its keras-tuner oracle) at 127.0.0.1:" in done.stdout
    assert time.monotonic() - started < 120
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (
        f"the MLflow tracking server at {served.address} asks for a user and password"
        in refused.stdout
    )


def test_a_worker_that_cannot_reach_the_tracking_server_says_so():
    from happysad.processes import free_port

    address = f"http://127.0.0.1:{free_port()}"
    done = _join("127.0.0.1:1", address, 2)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot reach the MLflow tracking server at {address}" in done.stdout


def test_two_workers_record_into_an_authenticated_server_on_postgresql(
    tiny, postgres_uri, tmp_path, monkeypatch, caplog
):
    """The README's several-machine store: mlflow server on PostgreSQL with its
    basic-auth app, artifacts served through it. The credentials are given in the
    tracking URI (http://admin:password@host): they reach the workers through MLflow's
    environment variables, and the password is nowhere else: in no file the sweep
    writes (its folder, happysad.json, the workers' logs, every artifact), no run's
    params or tags, no log line, and no process's command line while it runs."""
    import json
    import logging
    import secrets
    import threading
    import urllib.error
    import urllib.request

    from happysad.processes import free_port, stop_group
    from happysad.tracking.server import mlflow_command, store_env
    from tests.conftest import wait_for_http

    password = secrets.token_urlsafe(16)
    auth = tmp_path / "basic_auth.ini"
    auth.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'basic_auth.db'}\n"
        f"admin_username = admin\nadmin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    command = mlflow_command(
        "server",
        "127.0.0.1",
        port,
        *("--serve-artifacts", "--workers", "1"),
        *("--artifacts-destination", (tmp_path / "artifacts").as_uri()),
    )
    server = subprocess.Popen(
        command,
        env=store_env(
            postgres_uri,
            MLFLOW_AUTH_CONFIG_PATH=str(auth),
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    # Every process's command line, looked at while the sweep runs.
    command_lines: set[bytes] = set()
    sweeping = threading.Event()

    def watch_command_lines() -> None:
        while not sweeping.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    command_lines.add(cmdline.read_bytes())
                except OSError:
                    pass  # gone, or not ours to read
            time.sleep(0.2)

    watcher = threading.Thread(target=watch_command_lines, daemon=True)
    try:
        wait_for_http(f"{uri}/health", server)
        intruder = urllib.request.Request(
            f"{uri}/api/2.0/mlflow/experiments/create",
            data=json.dumps({"name": "intruder"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(intruder, timeout=30)
        assert refused.value.code == 401

        for variable in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.setenv(variable, "")  # put back as they were after the test
            monkeypatch.delenv(variable)
        secret_uri = f"http://admin:{password}@127.0.0.1:{port}"
        local_store = [o for o in tiny if not o.startswith("mlflow.tracking_uri=")]
        overrides = [*local_store, f"mlflow.tracking_uri={secret_uri}", "distributed=local"]
        overrides += ["sweep.name=pg", "tuner.max_trials=4"]
        caplog.set_level(logging.INFO, logger="happysad")
        watcher.start()
        result = run_sweep(compose_config(overrides), overrides=overrides)
        sweeping.set()
        watcher.join()

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        _four_trials_by_two_workers(uri)
        assert Store(uri).load_keras(result.best.model_uri).output_shape == (None, 1)
        assert (tmp_path / "artifacts").is_dir()  # written through the server, not beside it
        assert result.tracking_uri == uri

        leaks = [c.decode(errors="replace") for c in command_lines if password.encode() in c]
        assert not leaks
        assert any(b"happysad.worker" in c for c in command_lines)  # the workers were seen
        assert "the store's credentials in MLFLOW_TRACKING_URI" in caplog.text  # join line
        assert "more join with" in caplog.text and password not in caplog.text
        written = [f for f in tmp_path.rglob("*") if f.is_file() and f.name != "basic_auth.ini"]
        assert (tmp_path / "sweeps/pg/happysad.json") in written
        assert len([f for f in written if "artifacts" in f.parts]) > 10
        assert [f for f in written if password.encode() in f.read_bytes()] == []
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("happysad").experiment_id
        for run in client.search_runs([experiment]):
            assert password not in repr(run.data.params) + repr(run.data.tags)
        (sweep_run,) = [
            r
            for r in client.search_runs([experiment])
            if r.data.tags.get("happysad.role") == "sweep"
        ]
        recorded = Store(uri).read_text(sweep_run.info.run_id, "config/config.yaml")
        assert f"tracking_uri: {uri}" in recorded
    finally:
        sweeping.set()
        stop_group(server)


def test_a_ray_actor_killed_in_a_trial_is_restarted_and_its_trial_finishes(tmp_path, image_cache):
    cmd = [*_chief(image_cache), "distributed=ray", "tuner.max_trials=3"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    chief = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        worker = _worker_pid(chief.pid, "tuner0", limit=180)
        actor = running_parent(worker)  # the Ray actor holding it (the shim became the worker)
        _wait_for_text(tmp_path / "outputs/sweeps/faults/workers/tuner0.log", "epoch 1/3")
        os.kill(actor, signal.SIGKILL)
        out = chief.communicate(timeout=600)[0]
    finally:
        chief.kill()
    assert chief.returncode == 0, out[-3000:]
    assert "worker tuner0 died of SIGKILL (Killed)" in out and "started again (1 of 3)" in out
    (parent,), children = _runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    finished = Counter(c.info.run_name for c in children if c.info.status == "FINISHED")
    assert finished == Counter(f"trial-{i}" for i in range(3))
    assert [c.data.tags["happysad.worker"] for c in children if c.info.status == "KILLED"] == [
        "tuner0"
    ]


def test_sigterm_to_the_chief_stops_every_process_and_marks_the_runs_killed(tmp_path, image_cache):
    chief = start_command(_chief(image_cache, "tuner.epochs=20"), tmp_path)
    try:
        _worker_pid(chief.pid, "tuner1")
        _wait_for_text(tmp_path / "outputs/sweeps/faults/workers/tuner1.log", "epoch 2/20")
        started = descendants(chief.pid)
        # The chief never trains: it starts no trial processes' server of its own.
        children = process_tree()[chief.pid]
        assert not [p for p in children if b"forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()]
        chief.send_signal(signal.SIGTERM)
        out = chief.communicate(timeout=120)[0]
    finally:
        chief.kill()
    wait_until_gone(started, limit=60)
    assert chief.returncode == 130, out[-3000:]
    assert "To go on where it stopped: python -m happysad.sweep" in out
    (parent,), children = _runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert parent.info.status == "KILLED"
    statuses = {c.info.status for c in children}  # a short trial may have finished before
    assert "KILLED" in statuses and "RUNNING" not in statuses


def test_a_chief_whose_workers_all_died_says_so_and_exits_non_zero(tmp_path, image_cache):
    cmd = _chief(image_cache, "tuner.epochs=20", "distributed.restarts=0")
    chief = start_command(cmd, tmp_path)
    try:
        workers = [_worker_pid(chief.pid, f"tuner{k}") for k in (0, 1)]
        _wait_for_text(tmp_path / "outputs/sweeps/faults/workers/tuner0.log", "epoch 1/20")
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        out = chief.communicate(timeout=120)[0]
    finally:
        chief.kill()
    assert chief.returncode == 1, out[-3000:]
    assert "all 2 workers died before the search ended" in out
    assert "Run the same command again to continue the sweep" in out
    (parent,), children = _runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert parent.info.status == "FAILED"
    assert "RUNNING" not in {c.info.status for c in children}
