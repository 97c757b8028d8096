"""Every test runs on a real PostgreSQL.

By default pytest-postgresql starts a throwaway server (the machine's
`postgresql` package) and each test gets a fresh database cloned from a
template that `alembic upgrade head` has installed.

To use an existing server instead, with no CREATEDB needed, set
ECONOMY_SYNC_TEST_DSN to a database the tests may wipe: each test then
drops the schema economy there and installs it again. The few
tests that need a second database take it from ECONOMY_SYNC_TEST_SECOND_DSN.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import SEED_ATTACH, SEED_TABLES, seed_entries
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from economy_sync import advance_checkpoint, migrate
from economy_sync.pg_binaries import find_pg_ctl
from economy_sync.throwaway import PostgreSQLServerExecutor

EXISTING_DSN = os.environ.get("ECONOMY_SYNC_TEST_DSN")
EXISTING_SECOND_DSN = os.environ.get("ECONOMY_SYNC_TEST_SECOND_DSN")


def install_schema(host, port, user, dbname, password=None, **_):
    migrate.upgrade(
        make_conninfo(host=host, port=port, user=user, dbname=dbname, password=password)
    )


# scripts/test names the server it tests on: fail loudly if another would start
if expected_bindir := os.environ.get("ECONOMY_SYNC_TEST_PG_BINDIR"):
    assert Path(find_pg_ctl()).parent == Path(expected_bindir), (find_pg_ctl(), expected_bindir)

# the session's server too carries a mark no exiting child's pid can be part of
assert factories.process.PostgreSQLExecutor is PostgreSQLExecutor, "pytest-postgresql moved"
factories.process.PostgreSQLExecutor = PostgreSQLServerExecutor
pg_server = factories.postgresql_proc(executable=find_pg_ctl(), port=None, load=[install_schema])
pg_template_clone = factories.postgresql("pg_server")


def _conninfo(info) -> str:
    return make_conninfo(
        host=info.host, port=info.port, user=info.user, dbname=info.dbname, password=info.password
    )


def wipe(dsn: str) -> str:
    """Remove whatever an earlier test installed, however it got there: the
    schema, and the app tables tests create in public (as the database's owner)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS economy CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
        conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
    return dsn


@pytest.fixture
def dsn(request) -> str:
    """A database with the schema installed, fresh for this test."""
    if EXISTING_DSN:
        migrate.upgrade(wipe(EXISTING_DSN))
        return EXISTING_DSN
    return _conninfo(request.getfixturevalue("pg_template_clone").info)


_empty_counter = iter(range(10**6))


def _new_empty_database(request) -> Iterator[str]:
    server = request.getfixturevalue("pg_server")
    janitor = DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        dbname=f"empty_{os.getpid()}_{next(_empty_counter)}",
        password=server.password,
    )
    with janitor:
        yield make_conninfo(
            host=server.host, port=server.port, user=server.user, dbname=janitor.dbname
        )


@pytest.fixture
def empty_dsn(request) -> Iterator[str]:
    """A database without the schema."""
    if EXISTING_DSN:
        yield wipe(EXISTING_DSN)
        return
    yield from _new_empty_database(request)


@pytest.fixture
def second_empty_dsn(request) -> Iterator[str]:
    """Another database of the same server, without the schema."""
    if EXISTING_DSN:
        if not EXISTING_SECOND_DSN:
            pytest.fail("set ECONOMY_SYNC_TEST_SECOND_DSN: this test needs a second database")
        yield wipe(EXISTING_SECOND_DSN)
        return
    yield from _new_empty_database(request)


@pytest.fixture
def connect(dsn) -> Iterator:
    """connect(**kwargs): another connection to the test database (autocommit by
    default), closed after the test."""
    opened: list[psycopg.Connection] = []

    def _connect(autocommit: bool = True, **kwargs) -> psycopg.Connection:
        conn = psycopg.connect(dsn, autocommit=autocommit, **kwargs)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


@pytest.fixture
def conn(connect) -> psycopg.Connection:
    return connect()


LOGINS = {"economy_app": "economy_test_app_login", "economy_operator": "economy_test_op_login"}


@pytest.fixture
def login(conn, dsn) -> Iterator:
    """login(role): a new connection as a LOGIN role that is a member of role
    (economy_app or economy_operator): the roles an attacker or operator would have."""
    opened: list[psycopg.Connection] = []

    def _login(role: str) -> psycopg.Connection:
        name = LOGINS[role]
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone():
            conn.execute(f"CREATE ROLE {name} LOGIN")  # constants of this module
        # again each time: a test that removed the package drops its roles (and so
        # their members) when no other database of the server uses them
        conn.execute(f"GRANT {role} TO {name}")
        opened.append(psycopg.connect(make_conninfo(dsn, user=name), autocommit=True))
        return opened[-1]

    yield _login
    for c in opened:
        c.close()


@pytest.fixture
def seed(conn):
    """An attached app shaped like the Django platform this project grew out of
    (tests/helpers.py): profiles 1 and 2 with wallets 1 and 2; wallet 3, the
    treasury, has no owner. (Some test files shape their own.)"""
    conn.execute(SEED_TABLES)
    conn.execute(SEED_ATTACH)
    conn.execute("INSERT INTO app_profile (username) VALUES ('ana'), ('bo')")
    conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1), (2), (NULL)")
    return conn


@pytest.fixture
def seeded(conn):
    """The attached app with three profiles and a wallet each, 30 entries
    (helpers.seed_entries), and a ledger checkpoint over them."""
    conn.execute(SEED_TABLES)
    conn.execute(SEED_ATTACH)
    seed_entries(conn)
    assert advance_checkpoint(conn, "seed") == 30
    return conn
