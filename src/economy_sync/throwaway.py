"""A throwaway local PostgreSQL server, for the demo and the benchmarks.

pytest-postgresql's executor (already what the tests use) runs pg_ctl; the
server binaries are the machine's `postgresql` package.
"""

import os
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import port_for
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pytest_postgresql.executors import PostgreSQLExecutor

from economy_sync.pg_binaries import find_pg_ctl


def refuse_root() -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        raise PermissionError(
            "PostgreSQL refuses to run as root: run this as an unprivileged user "
            "(scripts/demo and scripts/test do it for you)"
        )


class PostgreSQLServerExecutor(PostgreSQLExecutor):
    """pytest-postgresql's executor, with a mark on the server's environment
    that holds no digit. mirakuru (3.1) marks what it starts with
    "<pid>:<uuid4>", and at the exit of any Python process that imported it
    SIGKILLs every process whose mark *contains* that process's pid: a child
    Python with pid 284 killed a server marked "6875:83b3c7ff-2849-..."."""

    def __init__(self, **options):
        super().__init__(**options)
        self._uuid = "economy-sync-" + "".join(
            secrets.choice(string.ascii_lowercase) for _ in range(24)
        )


@contextmanager
def _environment(extra: dict) -> Iterator[None]:
    """os.environ with extra set, for a child process started meanwhile."""
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ThrowawayServer:
    """A server in a temporary directory, with a new database in it; stopped
    and deleted on exit. crash() and restart() are for fault injection."""

    def __init__(
        self,
        dbname: str = "economy",
        settings: str = "",
        env: dict | None = None,
        password: str | None = None,
    ):
        """env: extra environment of the server process (LD_PRELOAD, say);
        password: every connection must give it (as a hosted server's do)."""
        self.password = password
        refuse_root()
        self.dbname = dbname
        self.workdir = Path(tempfile.mkdtemp(prefix="economy-sync-pg-"))
        self.port = port_for.select_random()
        self.pg_ctl = find_pg_ctl()
        self.executor = PostgreSQLServerExecutor(
            executable=self.pg_ctl,
            host="127.0.0.1",
            port=self.port,
            datadir=str(self.workdir / "data"),
            unixsocketdir=str(self.workdir),
            logfile=str(self.workdir / "server.log"),
            startparams="-w",
            dbname=dbname,
            user="postgres",
            password=password,
            postgres_options=settings,
        )
        self.env = env or {}

    def conninfo(self, dbname: str) -> str:
        return make_conninfo(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, password=self.password
        )

    @property
    def dsn(self) -> str:
        return self.conninfo(self.dbname)

    def __enter__(self) -> "ThrowawayServer":
        try:
            with _environment(self.env):
                self.executor.start()
            with self.connect_when_ready("postgres") as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def connect_when_ready(self, dbname: str, deadline_seconds: float = 60) -> psycopg.Connection:
        """A connection, once the server accepts them: the executor may return
        while it still answers "the database system is starting up"."""
        give_up = time.monotonic() + deadline_seconds
        while True:
            try:
                return psycopg.connect(self.conninfo(dbname), autocommit=True, connect_timeout=5)
            except psycopg.OperationalError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.1)

    def __exit__(self, *_) -> None:
        try:
            self.executor.stop()
        except Exception as error:  # never hide the original error behind this one
            print(f"warning: stopping the throwaway server: {error}", file=sys.stderr)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def crash(self) -> None:
        """Stop the server the way a power cut would: no checkpoint, crash recovery next."""
        subprocess.run(
            [self.pg_ctl, "stop", "-D", self.executor.datadir, "-m", "immediate"],
            check=True, capture_output=True,
        )  # fmt: skip

    def restart(self) -> None:
        """Start again after crash(), with the same settings (pg_ctl start -w)."""
        subprocess.run(self.executor.command_parts, check=True, capture_output=True)


@contextmanager
def throwaway_postgresql(dbname: str = "economy", settings: str = "") -> Iterator[str]:
    """Start a server in a temporary directory; yield a conninfo of a new
    database in it; stop the server and delete everything on exit."""
    with ThrowawayServer(dbname, settings) as server:
        yield server.dsn
