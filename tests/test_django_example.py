"""The example Django project (examples/django) runs its own test suite with
pytest-django on this run's PostgreSQL: its migrations install economy-sync and
attach it to the app's models; its tests write through the ORM."""

import os
import subprocess
import sys

import psycopg
import pytest
from conftest import EXISTING_DSN, EXISTING_SECOND_DSN, wipe
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from economy_sync._paths import SOURCE_ROOT
from economy_sync.throwaway import ThrowawayServer

EXAMPLE = SOURCE_ROOT / "examples" / "django"


@pytest.mark.slow
def test_the_django_example_project_passes(request):
    env = dict(os.environ)
    if EXISTING_DSN:  # no CREATEDB, maybe: the test database exists already
        env |= {
            "ECONOMY_SYNC_DJANGO_DSN": wipe(EXISTING_SECOND_DSN),
            "ECONOMY_SYNC_DJANGO_TEST_DB": conninfo_to_dict(wipe(EXISTING_DSN))["dbname"],
            "ECONOMY_SYNC_DJANGO_EXISTING_DB": "1",
        }
    else:
        server = request.getfixturevalue("pg_server")
        env["ECONOMY_SYNC_DJANGO_DSN"] = make_conninfo(
            host=server.host, port=server.port, user=server.user, dbname="esports"
        )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]


def example(env: dict, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *command], cwd=EXAMPLE, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("createrole", [True, False], ids=["createrole", "no-createrole"])
def test_the_example_passes_twice_as_a_hosted_role_with_the_test_helper(createrole):
    """As the README's "Your Django tests on a hosted PostgreSQL" says: a role
    with no CREATEDB (with CREATEROLE, or neither: then the roles recipe), its
    database and its test database made by an administrator. The example's suite
    passes twice in a row with pytest, Django's test classes with `manage.py
    test`; no trigger is left off, and the main database is never touched."""
    with ThrowawayServer("bootstrap") as server:
        with psycopg.connect(server.conninfo("postgres"), autocommit=True) as admin:
            admin.execute(
                f"CREATE ROLE hosted LOGIN NOCREATEDB {'CREATEROLE' if createrole else ''}"
            )
            admin.execute("CREATE DATABASE esports OWNER hosted")
            admin.execute("CREATE DATABASE test_esports OWNER hosted")
            main, test = (
                make_conninfo(server.conninfo(db), user="hosted")
                for db in ("esports", "test_esports")
            )
            if not createrole:
                recipe = subprocess.run(
                    [sys.executable, "-m", "economy_sync.cli", "roles", "--sql",
                     "--attachment", "esports", "--dsn", test],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                admin.execute(recipe.stdout)
        env = {
            **os.environ,
            "ECONOMY_SYNC_DJANGO_DSN": main,
            "ECONOMY_SYNC_DJANGO_EXISTING_DB": "1",
        }
        # removing the package drops its roles: not for a role that may not
        only_what_it_may = [] if createrole else ["-k", "not reversible"]
        for _ in range(2):
            done = example(env, "-m", "pytest", "-q", "-p", "no:cacheprovider", *only_what_it_may)
            assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        done = example(
            env, "manage.py", "test", "tests.test_testcases",
            "--testrunner", "economy_sync.django.testing.ExistingDatabaseRunner",
        )  # fmt: skip
        assert done.returncode == 0 and "OK" in done.stderr, done.stderr[-4000:]
        with psycopg.connect(test) as conn:
            assert conn.execute(
                "SELECT count(*) FROM pg_trigger t JOIN pg_proc f ON f.oid = t.tgfoid"
                " WHERE f.pronamespace = 'economy'::regnamespace AND t.tgenabled = 'D'"
            ).fetchone() == (0,)
        with psycopg.connect(main) as conn:
            assert conn.execute(
                "SELECT count(*) FROM pg_class WHERE relnamespace <> ALL (ARRAY["
                "'pg_catalog'::regnamespace, 'information_schema'::regnamespace,"
                " 'pg_toast'::regnamespace])"
            ).fetchone() == (0,)
