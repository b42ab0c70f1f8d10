"""Which MLflow store a command uses, and reading from it.

MLflow itself is imported at first use (about 2 s), so that the commands' `--help`
and their configuration errors answer at once.

Every command finds its store by one rule (`resolve_tracking_uri`) and works on it
through a `Store`: its URI and a client bound to it. A URI's user information
(`user:password@`) is never shown: `without_credentials` takes it out of whatever is
logged, printed, recorded or put on a command line, and a tracking server's user and
password reach MLflow through its own environment variables. Nothing here reads or sets
MLflow's global tracking URI or active run, so the same calls work from the sweep,
a trial's process, another machine or a test. The one exception is contained in
`Store.scoped`: MLflow's model logging and loading read the global URI, so it is
set for the length of that call only and put back.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from happysad.config.schema import Objective
from happysad.errors import StoreError
from happysad.tracking import names

# MLflow announces at INFO that it creates a new store's tables; a first sweep's
# console should show happysad's lines only (failures still come as errors).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
log = logging.getLogger("happysad")

DEFAULT_STORE = "mlruns"
STALE_CREATION = 600  # seconds: a store's temporary file older than this was abandoned


def resolve_tracking_uri(configured: str | None) -> str:
    """The store every command uses, by one rule: the URI given on its command line
    (`mlflow.tracking_uri=` for sweep and promote, `--tracking-uri` for predict, compare
    and ui), else MLFLOW_TRACKING_URI, else a SQLite store in ./mlruns (made absolute)."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path.cwd() / DEFAULT_STORE / 'mlflow.db').resolve()}"


# scheme:// then user information (user:password@) up to the last @ of the authority:
# an unencoded @ in a password ends up taken out too.
USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#]*@")
USERNAME_VARIABLE, PASSWORD_VARIABLE = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def without_credentials(text: str) -> str:
    """`text` with the user information (`user:password@`, `user@`) taken out of every
    URI in it: a URI, a command line, an override or a config as YAML, safe to log,
    print, write to a file or put on a command line. Paths and URIs without user
    information come back as they are."""
    return USERINFO.sub(r"\1", text)


def take_credentials(uri: str) -> str:
    """The URI MLflow is given for `uri`. A tracking server's user and password
    (http://user:password@host) move into MLflow's own environment variables,
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, which every process started
    from here inherits (never its command line), and leave the URI: MLflow's messages
    quote the URI. A database's (postgresql://user:password@host/db) stay: SQLAlchemy
    needs them in the URI, which therefore goes only to MLflow and to child processes'
    environment."""
    if not is_server(uri):
        return uri
    authority = urllib.parse.urlsplit(uri).netloc
    if "@" not in authority:
        return uri
    user, colon, password = authority.rpartition("@")[0].partition(":")
    os.environ[USERNAME_VARIABLE] = urllib.parse.unquote(user)
    if colon:
        os.environ[PASSWORD_VARIABLE] = urllib.parse.unquote(password)
    return without_credentials(uri)


def add_store_option(parser: Any) -> None:
    """The `--tracking-uri` option of the argparse commands (predict, compare, ui)."""
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="the MLflow store (default: MLFLOW_TRACKING_URI, else ./mlruns)",
    )


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def local_artifact_root(uri: str) -> Path | None:
    """Where a local SQLite store keeps artifacts: beside its database
    (mlruns/mlflow.db and mlruns/artifacts/); None for a server."""
    db = sqlite_path(uri)
    return None if db is None else (db.parent / "artifacts").resolve()


def quiet_run_links() -> None:
    """MLflow's 'View run' links, printed on every run logged over HTTP, are left out
    (a distributed sweep logs many): the sweep's summary says where its runs are."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def check_reachable(uri: str) -> None:
    """For commands that read a store: it must exist (SQLite) or answer (a server)."""
    db = sqlite_path(uri)
    if db is not None:
        if not db.is_file():
            raise StoreError(
                f"no MLflow store at {db}: run a sweep here first (make sweep), or give the "
                "store that has the runs (--tracking-uri, mlflow.tracking_uri= or MLFLOW_TRACKING_URI)"
            )
        return
    if is_server(uri):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as err:
            raise StoreError(
                f"the MLflow tracking server {uri} does not answer ({type(err).__name__}): start it, "
                "or give a running one (--tracking-uri, mlflow.tracking_uri= or MLFLOW_TRACKING_URI)"
            ) from err


def create_sqlite_store(db: Path, attempts: int = 2) -> None:
    """A fresh SQLite store at `db`, created whole or not at all.

    MLflow creates a store by running its schema migrations on the file itself. On
    SQLite they are not one transaction (the driver commits each schema change as it
    goes), so a creation that fails or is stopped half-way leaves a file every later
    command fails on, and two processes that create the same store at once (two sweeps
    started together, or `ui` opened while the first sweep creates it) run the same
    migrations over each other (KeyError: 'dimension_attributes', "table ... already
    exists"). Here the migrations run on a temporary file beside `db`, linked into
    place only once they all ran, and never over a store another process finished
    first. A creation that fails leaves nothing behind and is tried once more."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db.parent.mkdir(parents=True, exist_ok=True)
    # What a creation killed half-way (SIGKILL, a power cut) left: it takes seconds.
    for stale in db.parent.glob(f".{db.name}.*.creating*"):  # and its journal
        if time.time() - stale.stat().st_mtime > STALE_CREATION:
            stale.unlink(missing_ok=True)
    failure: Exception | None = None
    for attempt in range(attempts):
        # Not made here: SQLite makes it, with the permissions it gives any new store.
        name = str(db.parent / f".{db.name}.{secrets.token_hex(4)}.creating")
        try:
            store = SqlAlchemyStore(f"sqlite:///{name}", (db.parent / "artifacts").as_uri())
            store.engine.dispose()  # every connection to the file closed before it moves
            _link_into_place(Path(name), db)
            return
        except Exception as err:  # noqa: BLE001 - whatever failed, nothing is left behind
            failure = err
            if attempt + 1 < attempts:
                log.warning(
                    f"creating the MLflow store {db} failed ({_first_line(err)}); trying once more"
                )
        finally:
            for leftover in ("", "-journal", "-wal", "-shm"):
                Path(name + leftover).unlink(missing_ok=True)
    raise StoreError(
        f"could not create the MLflow store {db} ({_first_line(failure)}), and nothing was "
        "left behind: run the command again, and if it fails the same way, check that "
        f"{db.parent} has free space or give another mlflow.tracking_uri"
    ) from failure


def _link_into_place(fresh: Path, db: Path) -> None:
    """`fresh` becomes `db`, unless another process created `db` meanwhile: then its
    store is kept and `fresh` is dropped by the caller."""
    try:
        os.link(fresh, db)  # atomic, and never over an existing file
    except FileExistsError:
        return
    except OSError:  # a file system without hard links
        if not db.exists():
            os.replace(fresh, db)


def _first_line(err: BaseException | None) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


class Store:
    """One MLflow store: its URI, and a client bound to it for tracking and registry.

    `uri` is the store's address without credentials: what is shown and recorded.
    `connect_uri` is what MLflow is given (take_credentials): it may carry a database's
    password, so it goes only to MLflow and, through a pipe or the environment, to the
    processes this one starts."""

    def __init__(self, uri: str):
        self.connect_uri = take_credentials(uri)
        self.uri = without_credentials(uri)

    @functools.cached_property
    def client(self) -> Any:
        """MLflow's client. Made at first use, which creates a SQLite store that does not
        exist yet (create_sqlite_store)."""
        from mlflow.tracking import MlflowClient

        db = sqlite_path(self.connect_uri)
        if db is not None and not db.exists():
            create_sqlite_store(db)
        return MlflowClient(tracking_uri=self.connect_uri, registry_uri=self.connect_uri)

    @classmethod
    def resolve(cls, configured: str | None) -> Store:
        """The store by the rule every command follows (resolve_tracking_uri)."""
        return cls(resolve_tracking_uri(configured))

    @classmethod
    def existing(cls, configured: str | None) -> Store:
        """For commands that read: the store, which must exist or answer."""
        store = cls.resolve(configured)
        check_reachable(store.connect_uri)
        return store

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    @contextmanager
    def scoped(self, experiment_id: str | None = None) -> Iterator[None]:
        """MLflow's global tracking and registry URI set to this store for the length of
        a call into MLflow code that reads them (model logging, loading, registering),
        and its current experiment to `experiment_id` when given (a logged model is
        created in the current experiment, not its run's)."""
        from mlflow.tracking import fluent
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        # MLflow's setters also export the URIs to the environment: put back both.
        saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
        variables = {v: os.environ.get(v) for v in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        experiment = fluent._active_experiment_id
        tracking_utils.set_tracking_uri(self.connect_uri)
        registry_utils.set_registry_uri(self.connect_uri)
        if experiment_id is not None:
            fluent._active_experiment_id = experiment_id
        try:
            yield
        finally:
            fluent._active_experiment_id = experiment
            tracking_utils.set_tracking_uri(saved[0])
            registry_utils._registry_uri = saved[1]
            for variable, value in variables.items():
                if value is None:
                    os.environ.pop(variable, None)
                else:
                    os.environ[variable] = value

    # --- experiments ---------------------------------------------------------------

    def open_experiment(self, name: str) -> str:
        """Create the store (create_sqlite_store) and the experiment if needed, in this
        process, before any training; return the experiment's id."""
        from mlflow.exceptions import MlflowException
        from sqlalchemy.exc import SQLAlchemyError

        db = sqlite_path(self.uri)
        artifact_location = None
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            artifact_location = local_artifact_root(self.uri).as_uri()
        try:
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                # The kind makes the MLflow UI open the experiment on its training runs
                # rather than on the GenAI overview.
                return self.client.create_experiment(
                    name,
                    artifact_location=artifact_location,
                    tags={"mlflow.experimentKind": "custom_model_development"},
                )
        except MlflowException as err:
            raise StoreError(f"cannot open the MLflow store {self.uri}: {err.message}") from err
        except SQLAlchemyError as err:  # e.g. a store left half-made by MLflow or an older happysad
            hint = (
                f": if a first run was stopped while it created the store, move {db} aside and "
                "run again"
                if db is not None
                else ""
            )
            raise StoreError(
                f"cannot open the MLflow store {self.uri} ({_first_line(err)}){hint}"
            ) from err
        if experiment.lifecycle_stage == "deleted":
            raise StoreError(
                f"the MLflow experiment '{name}' is deleted in {self.uri}: restore it with "
                f"`mlflow experiments restore --experiment-id {experiment.experiment_id}`, "
                "or choose another mlflow.experiment"
            )
        return experiment.experiment_id

    def experiment_id(self, name: str) -> str:
        """An existing experiment's id, or a StoreError saying there is none."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            raise StoreError(f"the store {self.uri} has no experiment '{name}': run a sweep first")
        return experiment.experiment_id

    def experiment_ids(self) -> list[str]:
        return [e.experiment_id for e in self.client.search_experiments()]

    # --- runs ----------------------------------------------------------------------

    def run(self, run_id: str, what: str = "run") -> Any:
        """A run, or a StoreError naming `what` was asked for."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as err:
            raise StoreError(f"{what} {run_id} is not a run in {self.uri}: {err.message}") from err

    def find_sweeps(self, experiment_id: str, name: str | None = None, limit: int = 50) -> list:
        """The sweeps' parent runs, newest first; with `name`, the runs of that sweep."""
        wanted = f" and tags.`{names.SWEEP}` = '{name}'" if name else ""
        return self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{names.ROLE}` = '{names.ROLE_SWEEP}'{wanted}",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )

    def children(self, parent_run_id: str, experiment_id: str, where: str = "") -> list:
        """The trial runs of a sweep, oldest first; `where` adds to the filter."""
        condition = (
            f"tags.{names.PARENT_RUN_ID} = '{parent_run_id}' "
            f"and tags.`{names.ROLE}` = '{names.ROLE_TRIAL}'"
        )
        return self.client.search_runs(
            [experiment_id],
            filter_string=condition + (f" and {where}" if where else ""),
            order_by=["attributes.start_time ASC"],
            max_results=10000,
        )

    def finished_trials(self, sweep_run: Any, limit: int = 1000) -> list:
        """A sweep's FINISHED trial runs, best first by its own objective."""
        objective = sweep_run.data.params.get("tuner.objective", "val_accuracy")
        order = "ASC" if Objective(objective).direction == "min" else "DESC"
        return self.client.search_runs(
            [sweep_run.info.experiment_id],
            filter_string=f"tags.{names.PARENT_RUN_ID} = '{sweep_run.info.run_id}' "
            f"and tags.`{names.ROLE}` = '{names.ROLE_TRIAL}' "
            f"and attributes.status = '{names.FINISHED}'",
            order_by=[f"metrics.objective {order}"],
            max_results=limit,
        )

    def read_text(self, run_id: str, path: str) -> str:
        """A text artifact of a run, through the store (a server proxies artifacts)."""
        with tempfile.TemporaryDirectory(prefix="happysad-") as tmp:
            local = self.client.download_artifacts(run_id, path, tmp)
            return Path(local).read_text()

    # --- models --------------------------------------------------------------------

    def load_keras(self, model_uri: str) -> Any:
        """The Keras model at `model_uri` (runs:/, models:/ or a path)."""
        import mlflow.keras

        with self.scoped():
            return mlflow.keras.load_model(model_uri)

    def load_pyfunc(self, model_uri: str) -> Any:
        """The model's python_function flavour, or a StoreError saying what to do."""
        import mlflow.pyfunc
        from mlflow.exceptions import MlflowException

        try:
            with self.scoped():
                return mlflow.pyfunc.load_model(model_uri)
        except MlflowException as err:
            text = err.message
            if (
                model_uri.startswith("models:/")
                and "@" in model_uri
                and ("alias" in text.lower() or "not found" in text.lower())
            ):
                name, alias = model_uri[len("models:/") :].split("@", 1)
                raise StoreError(
                    f"no version of the registered model '{name}' has the alias '{alias}' yet: run "
                    "a sweep, then python -m happysad.promote to make its best model the champion"
                ) from err
            raise StoreError(f"the model {model_uri} does not exist in {self.uri}: {text}") from err
        except OSError as err:
            raise StoreError(f"the model {model_uri} cannot be read: {err}") from err
