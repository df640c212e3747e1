"""Child processes that serve on a loopback port: a free port, and the wait until one is ready.

Used by :mod:`ainerd_core.postgres_server` (the tests' and the load benchmark's PostgreSQL) and
:mod:`dashboard.testing` (the tests' dashboard servers); the test suite's Redis uses it too.
"""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reported free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path, chars: int = 4000) -> str:
    """The last ``chars`` characters of a process's log file ('' when it cannot be read)."""
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def wait_until_ready(proc: subprocess.Popen, ready: Callable[[], object], *, name: str, ready_means: str,
                     timeout: float, log: Callable[[], str], stop: Callable[[], None],
                     interval: float = 0.2) -> None:
    """Poll ``ready()`` every ``interval`` seconds until it returns something true (an exception
    counts as 'not yet': the process is still starting).

    Raises RuntimeError naming ``name`` with the tail of its ``log()`` when ``proc`` exits first,
    or, after calling ``stop()``, when it is not ready (``ready_means``, e.g. 'answer /healthz')
    within ``timeout`` seconds.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log()}")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - not serving yet
            pass
        time.sleep(interval)
    stop()
    raise RuntimeError(f"{name} did not {ready_means} within {timeout} s:\n{log()}")
