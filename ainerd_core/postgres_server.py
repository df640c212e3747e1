"""A throw-away PostgreSQL server (Debian's ``postgresql`` package) for the tests and the load benchmark.

:class:`PostgresServer` runs ``initdb`` into a fresh temporary folder and ``postgres`` on a free
loopback port (trust authentication, loopback only). As root it runs both as the ``postgres``
system user (``runuser`` for initdb; the server is started with that uid directly, so that it is
this process's child and dies with it), because PostgreSQL refuses to run as root. Every test gets its own
database (:meth:`PostgresServer.new_database`), so caches keyed by URL never see stale rows.

Used by the ``database`` fixture of ``tests/conftest.py`` (SQLite and PostgreSQL; through
``tests/postgres_support.py``) and by ``benchmarks/evaluation_load.py --postgres``. Tests skip without PostgreSQL binaries, unless
``AINERD_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), in which case they fail.

By hand::

    python -m ainerd_core.postgres_server       # start one, print its URL, stop on Ctrl-C
"""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .processes import free_port, log_tail, wait_until_ready

REQUIRE_ENV = "AINERD_REQUIRE_POSTGRES"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries (or no way to run them); the message says what to install."""


def postgres_bindir() -> Path:
    """The folder holding initdb and postgres: ``pg_config --bindir``, else the newest
    /usr/lib/postgresql/<version>/bin (Debian puts them there, not on PATH)."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        if out:
            candidates.append(Path(out))
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    candidates += versions
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).resolve().parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "postgres").exists():
            return c
    raise PostgresUnavailable("PostgreSQL server binaries not found (apt-get install postgresql)")


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child may no longer read our files


def _die_with_parent() -> None:
    """In the child before exec: SIGINT when the parent dies (Linux PR_SET_PDEATHSIG)."""
    _LIBC.prctl(1, int(signal.SIGINT))  # 1 = PR_SET_PDEATHSIG


class PostgresServer:
    """One throw-away PostgreSQL cluster. ``durable=False`` (tests) turns fsync off: the data is
    thrown away anyway; the load benchmark keeps PostgreSQL's defaults (``durable=True``)."""

    def __init__(self, durable: bool = False, max_connections: int = 300):
        self.bindir = postgres_bindir()
        self.durable, self.max_connections = durable, max_connections
        self.tmp = Path(tempfile.mkdtemp(prefix="ainerd-pg-"))
        self.datadir, self.sockdir = self.tmp / "data", self.tmp / "sock"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._names = itertools.count(1)
        self.user = None
        if os.geteuid() == 0:  # PostgreSQL refuses root: run it as the package's system user
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no 'postgres' user to run the server") from None
        self.role = self.user.pw_name if self.user else pwd.getpwuid(os.geteuid()).pw_name

    def _as_server_user(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", self.user.pw_name, "--", *cmd] if self.user else cmd

    def start(self, timeout: float = 60.0) -> "PostgresServer":
        self.sockdir.mkdir()
        if self.user:
            os.chown(self.tmp, self.user.pw_uid, self.user.pw_gid)
            os.chown(self.sockdir, self.user.pw_uid, self.user.pw_gid)
        init = subprocess.run(self._as_server_user([str(self.bindir / "initdb"), "-D", str(self.datadir), "-A", "trust",
                                                    "-U", self.role, "-E", "UTF8", "--locale=C", "--no-sync"]),
                              capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-2000:]}")
        opts = ["-c", f"port={self.port}", "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.sockdir}", "-c", f"max_connections={self.max_connections}",
                "-c", "logging_collector=off"]
        if not self.durable:
            opts += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self.log_path = self.tmp / "server.log"
        log = open(self.log_path, "ab")
        # the postmaster is our own child (as the postgres user when we are root, no runuser in
        # between) and gets SIGINT (fast shutdown) when this process dies, even by SIGTERM or
        # SIGKILL, when no fixture teardown runs: a killed test run leaves no server behind
        as_user = dict(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[]) if self.user else {}
        self.proc = subprocess.Popen([str(self.bindir / "postgres"), "-D", str(self.datadir), *opts],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent, **as_user)
        log.close()
        wait_until_ready(self.proc, lambda: self._admin("SELECT 1"), name="postgres",
                         ready_means="accept connections", timeout=timeout, log=self.log, stop=self.stop)
        return self

    def log(self) -> str:
        return log_tail(self.log_path, 3000)

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of one database (psycopg 3 driver, TCP on loopback)."""
        return f"postgresql+psycopg://{self.role}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str):
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.role, dbname="postgres",
                             autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else None

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database; return its URL."""
        name = f"{prefix}{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def checkpoint(self) -> None:
        """Write everything committed into the data files (so that they can be searched)."""
        self._admin("CHECKPOINT")

    def stored_bytes(self) -> bytes:
        """Every byte PostgreSQL keeps on disk (tables, indexes and the write-ahead log)."""
        self.checkpoint()
        return b"".join(p.read_bytes() for p in sorted(self.datadir.rglob("*")) if p.is_file())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            # SIGINT = "fast" shutdown: ends the open sessions (pooled connections of this
            # process) and shuts down cleanly; SIGTERM would wait for every client to leave
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    with PostgresServer(durable="--durable" in sys.argv) as pg:
        print(pg.url(), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
