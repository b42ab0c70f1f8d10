"""The workers a distributed sweep's chief starts and watches: worker processes on
this machine (`distributed=local`), or Ray actors that each hold one (`distributed=ray`).
A worker is `python -m happysad.worker` with its share of the CPU cores and GPUs; one
that dies is started again under the same keras-tuner id, so the oracle hands it the
trial it held."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from happysad.config.schema import Config
from happysad.errors import ConfigError
from happysad.processes import how_it_ended, stop_group, with_parent

CORES_VARIABLE = "HAPPYSAD_CPU_CORES"  # the cores a worker keeps to (its affinity)


@dataclass
class Worker:
    tuner_id: str
    env: dict[str, str]
    log_path: Path
    handle: Any = None  # its process, or its Ray actor's task
    restarts: int = 0
    done: bool = False
    gone: bool = False  # died more often than it may be started again
    exit_codes: list[int] = field(default_factory=list)


def worker_env(per_cpu: int, tracking: dict[str, str]) -> dict[str, str]:
    """What a worker's process is given beside its command line: the sweep's store
    (`tracking`: MLFLOW_TRACKING_URI, which may carry a database's password, which a
    command line would show every user of the machine, and the chief's own server's
    user and password; a user's server's credentials are in MLflow's own variables,
    passed on with the others), its thread counts, and MLflow's client
    retrying for about a minute rather than its default four (a remote server may
    rate-limit; the chief's own does not, and it starts that one again within seconds
    if it dies). A user's own settings win."""
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6",  # waits 0, 2, 4, 8, 16, 32 s
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        **{k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "HAPPYSAD_"))},
        **tracking,
        "TF_NUM_INTRAOP_THREADS": str(per_cpu),
        "TF_NUM_INTEROP_THREADS": str(min(2, per_cpu)),
        "OMP_NUM_THREADS": str(per_cpu),
    }


class Workers:
    """The workers the chief starts and watches; how they run is a subclass's."""

    def __init__(self, cfg: Config):
        self.command: list[str] = []  # given by start_all, once the oracle is served
        self.max_restarts = cfg.distributed.restarts
        self.workers: list[Worker] = []
        self.share = ""

    def start(self, worker: Worker) -> None:
        raise NotImplementedError

    def exit_code(self, worker: Worker) -> int | None:
        """None while it runs; a negative code: killed by that signal."""
        raise NotImplementedError

    def ended(self, worker: Worker) -> None:
        """Stop what a worker that ended left behind."""

    def stop(self) -> None:
        raise NotImplementedError

    def start_all(self, command: list[str]) -> None:
        """Start every worker with `command` (python -m happysad.worker ..., less its id)."""
        self.command = command
        for worker in self.workers:
            self.start(worker)

    def check(self, sweep) -> list[str]:
        """Look at every worker once: a finished one is done; one that died has what it
        left stopped and its RUNNING trial run marked KILLED, and is started again while
        it may be. Returns what happened, for the console."""
        events = []
        for w in self.workers:
            if w.done or w.gone or w.handle is None:
                continue
            code = self.exit_code(w)
            if code is None:
                continue
            w.exit_codes.append(code)
            self.ended(w)
            if code == 0:
                w.done = True
                continue
            how = how_it_ended(code)  # "died of SIGKILL (Killed)", "ended with exit code 1"
            killed = sweep.close_interrupted_trials(
                worker=w.tuner_id,
                reason=f"interrupted: its worker {w.tuner_id} {how} during this trial",
            )
            lost = f" during trial-{', trial-'.join(killed)} (run marked KILLED)" if killed else ""
            if w.restarts < self.max_restarts:
                w.restarts += 1
                self.start(w)
                events.append(
                    f"worker {w.tuner_id} {how}{lost}; started again "
                    f"({w.restarts} of {self.max_restarts}), see {w.log_path}"
                )
            else:
                w.gone = True
                events.append(
                    f"worker {w.tuner_id} {how}{lost}, and has been started again "
                    f"{self.max_restarts} times: the sweep goes on without it, see {w.log_path}"
                )
        return events

    @property
    def running(self) -> list[Worker]:
        return [w for w in self.workers if not (w.done or w.gone)]


class LocalWorkers(Workers):
    """`distributed.workers` worker processes on this machine, each in its own process
    group with its share of the CPU cores (affinity and TensorFlow's thread counts)
    and of the GPUs."""

    def __init__(self, cfg: Config, folder: Path, tracking: dict[str, str], gpus: int):
        super().__init__(cfg)
        d = cfg.distributed
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        n = max(d.workers, 1)
        per_cpu = d.cpus_per_worker or max(1, len(cores) // n)
        per_gpu = d.gpus_per_worker if d.gpus_per_worker is not None else gpus // n
        for k in range(d.workers):
            mine = [cores[(k * per_cpu + i) % len(cores)] for i in range(per_cpu)] if cores else []
            env = {
                **os.environ,
                **worker_env(per_cpu, tracking),
                "CUDA_VISIBLE_DEVICES": ",".join(str(k * per_gpu + i) for i in range(per_gpu)),
                CORES_VARIABLE: ",".join(map(str, mine)),
            }
            self.workers.append(Worker(f"tuner{k}", env, folder / f"tuner{k}.log"))
        self.share = _share(per_cpu, per_gpu)

    def start(self, worker: Worker) -> None:
        worker.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(worker.log_path, "a") as out:
            # A chief killed hard stops its workers too (with_parent); a worker's own
            # process group takes its trial's processes with it (stop_group).
            worker.handle = subprocess.Popen(
                with_parent([*self.command, "--id", worker.tuner_id]),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=worker.env,
                start_new_session=True,
            )

    def exit_code(self, worker: Worker) -> int | None:
        return worker.handle.poll()

    def ended(self, worker: Worker) -> None:
        stop_group(worker.handle, grace=2)  # what it left running (its trial's process)

    def stop(self) -> None:
        for w in self.workers:
            if w.handle is not None and w.handle.poll() is None:
                stop_group(w.handle, grace=30)


def _share(per_cpu: int, per_gpu: int) -> str:
    return f"{per_cpu} CPU core{'s' if per_cpu > 1 else ''}" + (
        f" and {per_gpu} GPU{'s' if per_gpu > 1 else ''}" if per_gpu else ""
    )


class WorkerActor:
    """A Ray actor that holds one worker: the resources it reserved are the worker's,
    and the worker's process ends with it (with_parent)."""

    def ping(self) -> bool:
        return True

    def run(self, command: list[str], env: dict[str, str], log_path: str, cwd: str) -> int:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as out:
            process = subprocess.Popen(
                with_parent(command),
                stdout=out,
                stderr=subprocess.STDOUT,
                # Ray gives the actor its GPUs in CUDA_VISIBLE_DEVICES: the worker inherits it.
                env={**os.environ, **env},
                cwd=cwd if Path(cwd).is_dir() else None,
                start_new_session=True,
            )
            return process.wait()


def _wait_until_alive(actor, limit: float = 120) -> None:
    """Until a restarting actor answers: a call made while Ray restarts it fails at once
    (actor calls are not retried), and the worker would be lost. After `limit` seconds
    the worker's own start fails, and says so."""
    import ray

    deadline = time.monotonic() + limit
    while True:
        try:
            ray.get(actor.ping.remote(), timeout=10)
            return
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)


class OwnRayToken:
    """The token of a Ray started for one sweep: Ray's token authentication
    (RAY_AUTH_MODE=token) with a fresh random token of its own, in a file only its
    owner can read (a private temporary folder, removed with it), never in a log or on
    a command line. Ray's processes find it by RAY_AUTH_TOKEN_PATH, which they inherit
    from this one's environment; the user's own Ray settings (RAY_AUTH_MODE,
    RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, and the token Ray keeps in ~/.ray) are neither
    used nor changed, and are as they were once the sweep's Ray has stopped.

    Ray reads these settings once per process (its RayConfig and its token's cache):
    they are read again on each change."""

    VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")

    def __init__(self):
        import secrets
        import tempfile

        self._saved = {k: os.environ.get(k) for k in self.VARIABLES}
        self.folder = Path(tempfile.mkdtemp(prefix="happysad-ray-"))  # 0700
        self.path = self.folder / "auth_token"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        os.environ.pop("RAY_AUTH_TOKEN", None)
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(self.path)
        _reload_ray_auth()

    def remove(self) -> None:
        """The user's settings back, and the token gone."""
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reload_ray_auth()
        self.path.unlink(missing_ok=True)
        self.folder.rmdir()


def _reload_ray_auth() -> None:
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _start_loopback_ray() -> None:
    """A Ray of this machine whose every server listens on loopback only. Ray's servers
    listen on its node's address, and on Linux ray.init makes a loopback
    `_node_ip_address` the machine's own address (every interface, for its gRPC
    servers) unless Ray runs as on macOS and Windows, single-machine, where it keeps
    loopback: it does so while it starts."""
    import ray
    from ray._private import ray_constants

    cluster = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            address="local",  # ours, even where RAY_ADDRESS names another Ray
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            object_store_memory=100 * 2**20,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster
    address = ray.nodes()[0]["NodeManagerAddress"]
    if address != "127.0.0.1":
        ray.shutdown()
        raise ConfigError(
            f"a Ray started for this sweep would listen on {address}, not loopback only "
            f"(this Ray, {ray.__version__}, starts otherwise than the ones happysad knows): "
            "start a Ray of your own and give its address in distributed.address"
        )


class RayWorkers(Workers):
    """`distributed.workers` Ray actors, each reserving the CPUs and GPUs its worker
    trains with, on the cluster at `distributed.address` (`auto`, `ray://...`), used
    with the user's own Ray settings, or on a Ray started here and stopped with the
    sweep: that one listens on loopback only, whatever `distributed.host` says (the
    oracle's address; the Ray's actors are all on this machine), and every request to it
    carries its token (OwnRayToken). An actor that dies is restarted by Ray and its
    worker started again under the same id."""

    def __init__(self, cfg: Config, folder: Path, tracking: dict[str, str]):
        import ray

        super().__init__(cfg)
        d = cfg.distributed
        self._own_ray = not ray.is_initialized()
        self._token: OwnRayToken | None = None
        if self._own_ray and d.address:
            ray.init(
                address=d.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        elif self._own_ray:
            self._token = OwnRayToken()
            try:
                _start_loopback_ray()
            except BaseException:
                self._token.remove()
                raise
        resources = ray.cluster_resources()
        n = max(d.workers, 1)
        per_cpu = d.cpus_per_worker or max(1, int(resources.get("CPU", 1)) // n)
        gpus = int(resources.get("GPU", 0))
        per_gpu = d.gpus_per_worker if d.gpus_per_worker is not None else gpus // n
        actor = ray.remote(WorkerActor).options(
            num_cpus=per_cpu, num_gpus=per_gpu, max_restarts=d.restarts
        )
        self.actors = {}
        for k in range(d.workers):
            tuner_id = f"tuner{k}"
            self.actors[tuner_id] = actor.remote()
            self.workers.append(
                Worker(tuner_id, worker_env(per_cpu, tracking), folder / f"{tuner_id}.log")
            )
        self.share = _share(per_cpu, per_gpu) + " (Ray actors)"

    def start(self, worker: Worker) -> None:
        actor = self.actors[worker.tuner_id]
        if worker.exit_codes:  # started again: its actor may still be restarting
            _wait_until_alive(actor)
        worker.handle = actor.run.remote(
            [*self.command, "--id", worker.tuner_id],
            worker.env,
            str(worker.log_path.resolve()),
            os.getcwd(),
        )

    def exit_code(self, worker: Worker) -> int | None:
        import ray

        ready, _ = ray.wait([worker.handle], timeout=0)
        if not ready:
            return None
        try:
            return ray.get(worker.handle)
        except ray.exceptions.RayActorError:
            return -signal.SIGKILL  # its actor died, and its worker with it
        except ray.exceptions.RayError:
            return 1

    def stop(self) -> None:
        import ray

        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)  # its worker gets SIGTERM (with_parent)
        self.actors = {}
        if self._own_ray and ray.is_initialized():
            ray.shutdown()
        if self._token is not None:
            self._token.remove()
            self._token = None
