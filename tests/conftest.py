"""Shared fixtures: composed configs and throw-away MLflow stores, never the repo's."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from happysad.config.composition import compose, register_configs, to_typed

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
register_configs()

REPO = Path(__file__).resolve().parents[1]
FER = REPO.parent / "shared" / "data" / "fer2013-happysad"


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
