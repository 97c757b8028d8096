"""The suite where this project's story began: a managed PostgreSQL, whose role
owns its databases and may create roles, but is neither superuser nor allowed
to create databases. A throwaway server gets such a role; the suite (all but
the slow tests) then runs against it in its existing-server mode."""

import os
import re
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from economy_sync._paths import SOURCE_ROOT
from economy_sync.throwaway import ThrowawayServer

ROLE = "managed_owner"


@pytest.mark.slow
def test_the_suite_passes_as_a_managed_postgresql_owner():
    with ThrowawayServer("bootstrap") as server:
        with psycopg.connect(server.conninfo("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE NOCREATEDB").format(
                sql.Identifier(ROLE)))  # fmt: skip
            for database in ("managed", "managed_second"):
                admin.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(ROLE)
                    )
                )
        dsn = make_conninfo(server.conninfo("managed"), user=ROLE)
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"],
            cwd=SOURCE_ROOT,
            env={
                **os.environ,
                "ECONOMY_SYNC_TEST_DSN": dsn,
                "ECONOMY_SYNC_TEST_SECOND_DSN": make_conninfo(dsn, dbname="managed_second"),
            },
            capture_output=True,
            text=True,
            timeout=900,
        )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in summary and not re.search(r"\b\d+ (failed|errors?)\b", summary), summary
