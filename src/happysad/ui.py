"""`python -m happysad.ui [--port 5000]`: the MLflow UI on this project's store.

Starts `mlflow ui` on 127.0.0.1 over the store the sweeps write to (--tracking-uri,
else MLFLOW_TRACKING_URI, else ./mlruns), and prints the address of the latest sweep's page. With a tracking
server, it only prints the page's address there. The UI asks for a user and a password
(MLflow's basic-auth app): every user of the machine can reach a loopback port, and
only its owner can read the file that holds the password, made anew each start. Ctrl-C stops it, and so do SIGTERM
and SIGHUP (a supervisor, `kill`, a closed terminal): the server and its workers are
stopped with it, never left holding the port.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys

from happysad.errors import HappysadError, StoreError
from happysad.processes import signals_stop, stop_group
from happysad.tracking.server import USER, authenticated, mlflow_command, store_env
from happysad.tracking.store import Store, add_store_option, is_server


def latest_sweep_page(store, base: str) -> str:
    """The address of the latest sweep's run page, or of the experiments list."""
    sweeps = [s for e in store.experiment_ids() for s in store.find_sweeps(e, limit=1)]
    if not sweeps:
        return f"{base}/#/experiments"
    latest = max(sweeps, key=lambda r: r.info.start_time)
    return f"{base}/#/experiments/{latest.info.experiment_id}/runs/{latest.info.run_id}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m happysad.ui", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")

    add_store_option(parser)
    args = parser.parse_args(argv)

    try:
        store = Store.existing(args.tracking_uri)
        uri = store.uri
        if is_server(uri):
            print(
                f"the store is a tracking server: open {latest_sweep_page(store, uri.rstrip('/'))}"
            )
            return 0
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", args.port)) == 0:
                raise StoreError(
                    f"port {args.port} on 127.0.0.1 is in use: choose another with --port"
                )
        page = latest_sweep_page(store, f"http://127.0.0.1:{args.port}")
    except HappysadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    command = mlflow_command("ui", "127.0.0.1", args.port)
    with authenticated() as login:
        print(
            f"MLflow UI on {uri}\nthe latest sweep: {page}\n"
            f"user {USER}, password in {login.password_file()} (only you can read it)\n"
            "(Ctrl-C stops it)",
            flush=True,
        )
        # Its own process group: `mlflow ui` starts uvicorn workers, and all of them must
        # go when this command does, whatever ended it.
        server = subprocess.Popen(
            command, env=store_env(store.connect_uri, **login.server_env), start_new_session=True
        )
        try:
            with signals_stop():
                return server.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            stop_group(server)


if __name__ == "__main__":
    sys.exit(main())
