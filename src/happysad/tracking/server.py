"""An MLflow tracking server over a local store, for many writers at once.

A SQLite store takes one writer well and several badly, and a fresh one opened by
several processes at once fails its schema migration. Where a sweep's trials run in
processes of their own on this machine, it serves its store with `mlflow server` on a
free loopback port and they log over HTTP; the store stays the same file a later
`promote`, `compare` or `ui` reads. The store is created (and migrated) here, in the
one process that starts the server, before anything else opens it.

Every server started here runs MLflow's basic-auth app: a loopback port is open to
every user of the machine, and without it any of them could move a model's alias or
upload files written as the owner. Its one user and password are made for the server
and live only in its environment and its clients' (MLflow's MLFLOW_TRACKING_USERNAME
and MLFLOW_TRACKING_PASSWORD), never on a command line, in a log or in an artifact.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from happysad.errors import StoreError
from happysad.processes import free_port, how_it_ended, stop_group, with_parent
from happysad.tracking.store import (
    PASSWORD_VARIABLE,
    USERNAME_VARIABLE,
    Store,
    local_artifact_root,
    sqlite_path,
)

USER = "happysad"  # the one user of a server started here


@contextmanager
def serving(uri: str, host: str = "127.0.0.1", start_limit: float = 120) -> Iterator[Server]:
    """`mlflow server` over the local SQLite store `uri` for the length of the block,
    answering (its address: http://host:port; its clients' login: `client_env`).
    Artifacts go to the store's own artifact folder, served through the server for
    experiments it creates. Raises StoreError, with the server's last lines, if it does
    not answer within `start_limit` seconds."""
    with started(uri, host) as server:
        server.wait_until_up(start_limit)
        yield server


@dataclass
class Login:
    """The one user of a server started here: its password, made now, and the folder
    only this user can open that holds the server's user store and configuration."""

    password: str
    folder: Path

    @property
    def server_env(self) -> dict[str, str]:
        """What runs `mlflow server --app-name basic-auth` with this user as its admin
        (every permission) and everyone else refused. MLflow reads the password from
        MLFLOW_AUTH_ADMIN_PASSWORD when it creates the user: no file holds it."""
        config = self.folder / "basic_auth.ini"
        if not config.exists():
            config.write_text(
                "[mlflow]\n"
                "default_permission = NO_PERMISSIONS\n"
                f"database_uri = sqlite:///{self.folder / 'users.db'}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_USERNAME": USER,
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.password,
            # Signs the UI's forms (CSRF); made per server, like the password.
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        }

    def password_file(self) -> Path:
        """The password, in a file in the private folder, for a person to read."""
        path = self.folder / "password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(self.password)
        return path


@dataclass
class Server:
    """An `mlflow server` process that may still be starting."""

    address: str
    process: subprocess.Popen
    output: IO[bytes]
    login: Login
    command: list[str]
    env: dict[str, str]

    @staticmethod
    def launch(command: list[str], env: dict[str, str], output: IO[bytes]) -> subprocess.Popen:
        # Its own process group: the server's workers go with it, whatever ends it. It
        # ends with this process too, however this one ends.
        return subprocess.Popen(
            with_parent(command),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def restart_if_ended(self, limit: float = 120) -> str | None:
        """None while the server runs. Once it has ended (killed, out of memory): what
        it left is stopped and it is started again on the same store, port and login,
        and waited for; returns what happened, for the console. Its clients' requests
        meanwhile are retried by MLflow's client (a distributed sweep's workers: for
        about a minute, `worker_env`), so nothing they log is lost."""
        returncode = self.process.poll()
        if returncode is None:
            return None
        stop_group(self.process, grace=5)  # its uvicorn, if only the mlflow command died
        self.output.write(f"\n[happysad] the server {how_it_ended(returncode)}\n".encode())
        self.output.flush()
        self.process = self.launch(self.command, self.env, self.output)
        self.wait_until_up(limit)
        return (
            f"the sweep's MLflow tracking server {how_it_ended(returncode)}: started again "
            f"on the same store at {self.address}; what the workers log meanwhile is retried"
        )

    @property
    def client_env(self) -> dict[str, str]:
        """The variables that let an MLflow client in another process in."""
        return {USERNAME_VARIABLE: USER, PASSWORD_VARIABLE: self.login.password}

    def wait_until_up(self, limit: float = 120) -> str:
        """Its address once it answers; StoreError, with its last lines, if it exits or
        does not answer within `limit` seconds."""
        deadline = time.monotonic() + limit
        while True:
            try:
                with urllib.request.urlopen(f"{self.address}/health", timeout=2):
                    return self.address
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.output.seek(0)
                    last = self.output.read().decode(errors="replace").strip().splitlines()[-5:]
                    why = (
                        "exited"
                        if self.process.poll() is not None
                        else f"did not answer in {limit:.0f} s"
                    )
                    raise StoreError(
                        f"the MLflow tracking server for the store at {self.address} {why}: "
                        + (" | ".join(last) or "no output")
                    ) from None
                time.sleep(0.3)


@contextmanager
def started(uri: str, host: str = "127.0.0.1") -> Iterator[Server]:
    """`mlflow server` over the local SQLite store `uri`, started (not yet answering:
    its start takes seconds, which the caller may spend on other work) and stopped with
    the block."""
    if sqlite_path(uri) is None:
        raise StoreError(f"{uri} is not a local SQLite store: a server is served as it is")
    Store(uri).client.search_experiments(max_results=1)  # created and migrated here, once
    port = free_port(host)
    # One worker: a SQLite file takes one writer at a time however many serve it.
    artifacts = local_artifact_root(uri).as_uri()
    command = mlflow_command(
        "server", host, port, "--artifacts-destination", artifacts, "--workers", "1"
    )
    with authenticated() as login, tempfile.TemporaryFile() as output:
        env = store_env(uri, **login.server_env)
        server = Server(
            f"http://{host}:{port}",
            Server.launch(command, env, output),
            output,
            login,
            command,
            env,
        )
        try:
            yield server
        finally:
            stop_group(server.process)  # the one running now, if it was started again


@contextmanager
def authenticated() -> Iterator[Login]:
    """A login made for a server, its folder removed with the block."""
    folder = Path(tempfile.mkdtemp(prefix="happysad-auth-"))  # mode 0700
    try:
        yield Login(secrets.token_urlsafe(24), folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def mlflow_command(verb: str, host: str, port: int, *options: str) -> list[str]:
    """`mlflow ui` or `mlflow server` with MLflow's basic-auth app on host:port; its store
    is given by `store_env`, its user by `Login.server_env`."""
    mlflow = Path(sys.executable).parent / "mlflow"
    return [
        str(mlflow) if mlflow.exists() else "mlflow",
        verb,
        "--app-name",
        "basic-auth",
        "--host",
        host,
        "--port",
        str(port),
        *options,
    ]


def store_env(uri: str, **variables: str) -> dict[str, str]:
    """The environment of an `mlflow ui` or `mlflow server` over the store `uri`: the
    store goes in MLflow's MLFLOW_BACKEND_STORE_URI, not on the command line, where
    every user of the machine would read a database's password (`ps`)."""
    return {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri, **variables}


@contextmanager
def for_many_writers(uri: str, many: bool) -> Iterator[Server | None]:
    """For `many` writers (a distributed sweep's workers) over a local SQLite store,
    `mlflow server` over it, started now and stopped with the block: it stays the file
    promote, compare and ui read. None otherwise: one writer writes the file itself, and
    an http(s) store is used as it is."""
    if not many or not sqlite_path(uri):
        yield None
        return
    with started(uri) as server:
        yield server
