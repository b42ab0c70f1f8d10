"""The processes happysad starts, and how they end: with the command that started
them, however it ends (a hard kill too), and as cleanly as Ctrl-C on SIGTERM or SIGHUP.
Used by every layer that starts a process (trials, workers, tracking servers, the UI)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def signals_stop() -> Iterator[None]:
    """SIGTERM and SIGHUP (a scheduler's or supervisor's kill, `kill`, a closed
    terminal) end the command as Ctrl-C does: a KeyboardInterrupt, so what it started
    is stopped and its runs are marked KILLED."""
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """On Linux, have `signum` sent to this process when the process that started it
    ends, however it ends (a hard kill too), so nothing it started is left running. Call
    it first thing in the child (a trial's process); for a command, see with_parent."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signum)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def with_parent(command: list[str]) -> list[str]:
    """`command`, run so that it gets SIGTERM when the process that starts it ends (a
    hard kill too): a Python shim sets that, then becomes the command. Safer than a
    Popen preexec_fn, which may deadlock in a process with threads."""
    if not sys.platform.startswith("linux"):
        return command
    shim = (
        "import ctypes, os, signal, sys; "
        "ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
        "os.getppid() == int(sys.argv[1]) or sys.exit(1); "
        "os.execvp(sys.argv[2], sys.argv[2:])"
    )
    return [sys.executable, "-c", shim, str(os.getpid()), *command]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_group(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM to a process's whole group, then SIGKILL to what is left after `grace`."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # workers that outlived their parent
    except ProcessLookupError:
        pass
    process.wait()


# Signals that mean the process crashed in native code rather than was stopped.
_CRASHES = {"SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT"}


def how_it_ended(returncode: int | None) -> str:
    """'died of SIGSEGV (Segmentation fault)' for a process a signal ended (a negative
    return code), else 'ended with exit code N'."""
    if returncode is None or returncode >= 0:
        return f"ended with exit code {returncode}"
    signum = -returncode
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"died of signal {signum}"
    return f"died of {name} ({signal.strsignal(signum)})"


def died(what: str, returncode: int | None, log: str | os.PathLike | None) -> str:
    """One sentence for a process that ended before its result: what died, how (the
    signal by name), why that may be, and where its log is."""
    how = how_it_ended(returncode)
    name = how.split()[2] if how.startswith("died of SIG") else ""
    if name in _CRASHES:
        why = ": a crash inside TensorFlow or another native library, not a Python error"
    elif name == "SIGKILL":
        why = ": killed, most often by the system when memory ran out"
    else:
        why = ""
    where = f"; its log: {log}" if log else "; it left no log"
    return f"{what} {how}{why}{where}"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
