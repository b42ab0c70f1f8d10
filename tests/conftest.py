"""Shared fixtures: composed configs and throw-away MLflow stores, never the repo's.

The tests live in three tiers, by folder, each marked by its folder's conftest.py:
`unit/` (no TensorFlow training, no server, no subprocess: `make test-fast`),
`integration/` (real sweeps, pretraining, promote, predict, compare) and `system/`
(distributed sweeps, Ray, PostgreSQL, the browser, signals). `make test` runs them all."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from happysad.config.composition import compose, register_configs, to_typed
from happysad.processes import free_port  # noqa: F401 - the tests' helper too

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
register_configs()

REPO = Path(__file__).resolve().parents[1]
FER = REPO.parent / "shared" / "data" / "fer2013-happysad"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs two workers), the tests that read the
    session's finished sweeps run on one worker, which makes them once; so do the tests
    that start a Ray of their own."""
    for item in items:
        if "finished_sweeps" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("finished_sweeps"))
        elif "ray" in item.name:
            item.add_marker(pytest.mark.xdist_group("ray"))


def sweep_runs(uri: str) -> tuple[list, list]:
    """The parent runs and the nested (trial) runs of a store's `happysad` experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("happysad")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def by_status(children) -> dict[str, list[str]]:
    """Run names by status: {"FINISHED": ["trial-0", ...], ...}."""
    out: dict[str, list[str]] = {}
    for c in children:
        out.setdefault(c.info.status, []).append(c.info.run_name)
    return {k: sorted(v) for k, v in out.items()}


def mark_tier(items: list[pytest.Item], conftest: str, tier: str) -> None:
    """Mark with `tier` every collected test in the folder of `conftest` (each tier's
    conftest.py calls it, so that no test of a folder can forget its mark)."""
    folder = Path(conftest).resolve().parent
    for item in items:
        if folder in item.path.resolve().parents:
            item.add_marker(getattr(pytest.mark, tier))


def compose_config(overrides: list[str] | tuple[str, ...] = ()):
    return compose(overrides)


def typed_config(overrides: list[str] | tuple[str, ...] = ()):
    return to_typed(compose_config(overrides))


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Whatever a test writes relative to the current folder lands in its tmp folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory) -> Path:
    """One synthetic-image cache for the whole session: each set is drawn once."""
    return tmp_path_factory.mktemp("image-cache")


@pytest.fixture
def store_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def tiny(tmp_path, image_cache, store_uri) -> list[str]:
    """Overrides for a sweep of seconds in a temporary store."""
    return [
        "debug=tiny",
        "data.num_images=120",
        f"data.cache_dir={image_cache}",
        f"mlflow.tracking_uri={store_uri}",
        f"sweep.dir={tmp_path / 'sweeps'}",
    ]


@dataclass
class FinishedSweeps:
    """A store with finished sweeps, shared by the tests that only read them."""

    root: Path  # the sweeps ran here (their relative paths, the image cache, resolve here)
    uri: str
    results: dict  # sweep name -> SweepResult

    @property
    def latest(self):
        return self.results["tiny"]


@pytest.fixture(scope="session")
def finished_sweeps(tmp_path_factory) -> FinishedSweeps:
    """Three sweeps in one store, run once for the whole session: `good`, a small network
    that learns the synthetic faces in a few seconds (test AUC about 0.74) at two
    learning rates, and at a third, 0, is pruned (median rule), `bad`, the
    same at learning rate 0, which cannot learn, and `tiny`, the newest: two trials of
    the tiny debug sweep. Promote, predict, serving, compare and the UI read them."""
    from happysad.sweep import run_sweep

    root = tmp_path_factory.mktemp("finished")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    store = [
        f"data.cache_dir={root / 'cache'}",
        f"mlflow.tracking_uri={uri}",
        f"sweep.dir={root / 'sweeps'}",
    ]
    learns = [
        *store,
        "data.num_images=1200",
        "experiment=seed_baseline",
        "model.depth.value=2",
        "model.filters=[{value:32},{value:64}]",
        "tuner.epochs=6",
    ]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        results = {
            # Grid order: two learning rates that learn, then 0, which cannot and is
            # pruned by the median rule after 4 of its 6 epochs.
            "good": run_sweep(
                compose(
                    [
                        *learns,
                        "sweep.name=good",
                        "tuner=grid",
                        "tuner.max_trials=3",
                        "optimizer.learning_rate.value=null",
                        "optimizer.learning_rate.choices=[0.002,0.0015,0.0]",
                        "tuner.pruning=median",
                        "tuner.pruning_warmup=4",
                    ]
                )
            ),
            "bad": run_sweep(
                compose([*learns, "sweep.name=bad", "optimizer.learning_rate.value=0.0"])
            ),
            "tiny": run_sweep(
                compose([*store, "debug=tiny", "data.num_images=120", "sweep.name=tiny"])
            ),
        }
    finally:
        os.chdir(cwd)
    return FinishedSweeps(root, uri, results)


def wait_for_http(url: str, process, limit: float = 180) -> None:
    """Until `url` answers; fails with the server's output if it dies or takes too long."""
    deadline = time.monotonic() + limit
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                output = process.stdout.read() if process.stdout else ""
                output = output.decode() if isinstance(output, bytes) else output
                raise AssertionError(f"{url} never answered:\n{output[-3000:]}") from None
            time.sleep(0.5)


def http_status(url: str, password: str | None = None) -> int:
    """The HTTP status of a GET of `url`, as user happysad with `password` if given."""
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"happysad:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def sweep_command(cache: Path, *extra: str) -> list[str]:
    """`python -m happysad.sweep` on the tiny synthetic set, as a user types it."""
    return [
        sys.executable,
        "-m",
        "happysad.sweep",
        "debug=tiny",
        "data.num_images=120",
        f"data.cache_dir={cache}",
        *extra,
    ]


def start_command(cmd: list[str], cwd: Path) -> subprocess.Popen:
    """A command as a user's shell starts it, its output readable line by line."""
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A suite started in the background (`.ci/run &`) inherits SIGINT ignored, and
        # so would the command: give it the terminal's default, as a user's shell does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def running_parent(pid: int) -> int | None:
    """The parent of a process still running; None once it has ended (a zombie has
    ended too: only its parent has not read its status yet)."""
    try:
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except (OSError, ValueError):
        return None
    return None if state == "Z" else int(parent)


def process_tree() -> dict[int, list[int]]:
    """The children of every running process, by its pid (Linux's /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        process = int(stat.parent.name)
        parent = running_parent(process)
        if parent is not None:
            children.setdefault(parent, []).append(process)
    return children


def descendants(pid: int) -> list[int]:
    """Every running process below `pid`, at any depth."""
    tree, found, todo = process_tree(), [], [pid]
    while todo:
        below = tree.get(todo.pop(), [])
        found += below
        todo += below
    return found


def wait_until_gone(pids: list[int], limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    while alive := [p for p in pids if running_parent(p) is not None]:
        assert time.monotonic() < deadline, f"processes {alive} outlived the command"
        time.sleep(0.1)


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL's server refuses to run as root: as root, run it as its own user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture
def postgres_uri():
    """A throw-away PostgreSQL (Debian's packages; .ci/run installs them when missing)
    with an empty database: its SQLAlchemy URI for MLflow."""
    import glob
    import shutil
    import subprocess
    import tempfile

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert found, "PostgreSQL is not installed: apt-get install postgresql (.ci/run does)"
    bin_dir = Path(found[-1]).parent
    # Outside pytest's folders, which only root may enter.
    home = Path(tempfile.mkdtemp(prefix="happysad-pg-"))
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    data = home / "data"
    subprocess.run(
        _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        _as_postgres(
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(home)]
            + ["-c", "listen_addresses=127.0.0.1"]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            try:
                connection = psycopg2.connect(
                    host="127.0.0.1", port=port, user="postgres", dbname="postgres"
                )
                break
            except psycopg2.OperationalError:
                assert server.poll() is None and time.monotonic() < deadline, "postgres died"
                time.sleep(0.3)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE mlflow")
        connection.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(home, ignore_errors=True)
