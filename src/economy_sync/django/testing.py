"""Your Django project's tests where its database role may not create databases
(a hosted PostgreSQL): they run on a test database made beforehand by an
administrator, owned by your role (`TEST: {"NAME": ...}` in the settings, else
Django's `test_<NAME>`), never on the settings' main database. Unless Django
is told to keep it (`--keepdb`, pytest-django's `--reuse-db`), the test
database is emptied first, so that the migrations build it anew; it is never
dropped. The package's triggers are never switched off for the tests (Django's
flush is one TRUNCATE of every table, which attached ledgers allow); one that a
test switched off is switched on again at the end, and named.

With pytest-django, in your conftest.py:

    from economy_sync.django.pytest_plugin import django_db_setup  # noqa: F401

With `manage.py test`, in your settings:

    TEST_RUNNER = "economy_sync.django.testing.ExistingDatabaseRunner"

(or mix `ExistingDatabaseMixin` into your own runner). No `--parallel`: its
clones need CREATEDB.
"""

import warnings

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.test.runner import DiscoverRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from economy_sync.django.dsn import connection_dsn

# every schema the role may drop and make anew; public as PostgreSQL 15+ makes it
EMPTY = """
DO $$
DECLARE
    schema_name name;
BEGIN
    IF (SELECT d.datdba FROM pg_catalog.pg_database d WHERE d.datname = current_database())
        <> current_user::regrole THEN
        RAISE EXCEPTION 'the test database % is not owned by %: an administrator makes it'
            ' with CREATE DATABASE ... OWNER %', current_database(), current_user, current_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    FOR schema_name IN
        SELECT n.nspname FROM pg_catalog.pg_namespace n
        WHERE n.nspowner IN (current_user::regrole, 'pg_database_owner'::regrole)
            AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema'])
            AND n.nspname !~ '^pg_(toast|temp_)'
    LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', schema_name);
    END LOOP;
    CREATE SCHEMA public AUTHORIZATION pg_database_owner;
    GRANT USAGE ON SCHEMA public TO PUBLIC;
END;
$$;
"""

# the triggers whose functions are the package's, switched off
SWITCHED_OFF = """
SELECT n.nspname, c.relname, t.tgname
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE f.pronamespace = to_regnamespace('economy') AND t.tgenabled = 'D' AND NOT t.tgisinternal
"""


def existing_test_databases(aliases=None) -> dict[str, str]:
    """Each PostgreSQL test database (alias -> libpq string), mirrors aside and
    one per database: it exists, and is none of the main databases (by name,
    and as the server names it once connected), else ImproperlyConfigured."""
    postgresql = [alias for alias in connections if connections[alias].vendor == "postgresql"]
    main = {connections[alias].settings_dict["NAME"] for alias in postgresql}
    found: dict[str, str] = {}
    for alias in aliases or postgresql:
        connection = connections[alias]
        if connection.vendor != "postgresql" or connection.settings_dict["TEST"].get("MIRROR"):
            continue
        test = connection.creation._get_test_db_name()
        if test in main:
            raise ImproperlyConfigured(
                f"the test database of {alias!r} is the main database {test!r}: name another in"
                " its TEST settings; the tests empty it"
            )
        if len(test.encode()) > 63:  # PostgreSQL would cut it: to what?
            raise ImproperlyConfigured(f"test database name longer than 63 bytes: {test!r}")
        with connection._nodb_cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", [test])
            if cursor.fetchone() is None:
                raise ImproperlyConfigured(
                    f"no test database {test!r}: an administrator makes it once with"
                    f" CREATE DATABASE {test} OWNER {connection.settings_dict['USER'] or 'you'}"
                )
        dsn = make_conninfo(connection_dsn(connection), dbname=test)
        if dsn not in found.values():
            found[alias] = dsn
    return found


def empty(dsn: str, main_databases: set[str]) -> None:
    """Drop every schema the test database's owner has, keep the database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        reached = conn.execute("SELECT current_database()").fetchone()[0]
        if reached in main_databases or reached != conninfo_to_dict(dsn)["dbname"]:
            raise ImproperlyConfigured(f"{dsn!r} reaches {reached!r}, not its test database")
        conn.execute(EMPTY)


def main_databases() -> set[str]:
    """The databases the PostgreSQL connections reach, as the server names them."""
    names = set()
    for connection in connections.all():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_database()")
                names.add(cursor.fetchone()[0])
    return names


def switch_triggers_on(dsn: str) -> list[str]:
    """Switch on the package's triggers a test left off; returns them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        switched = conn.execute(SWITCHED_OFF).fetchall()
        for schema, table, trigger in switched:
            conn.execute(
                sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(
                    sql.Identifier(schema, table), sql.Identifier(trigger)
                )
            )
    return [f"{trigger} on {schema}.{table}" for schema, table, trigger in switched]


def prepare(aliases=None, keep: bool = False) -> dict[str, str]:
    """The test databases, checked and (unless kept) emptied."""
    dsns = existing_test_databases(aliases)
    if not keep:
        main = main_databases()
        for dsn in dsns.values():
            empty(dsn, main)
    return dsns


def finish(dsns: dict[str, str]) -> None:
    for alias, dsn in dsns.items():
        if switched := switch_triggers_on(dsn):
            warnings.warn(
                f"tests left economy-sync's triggers off on {alias!r}, switched on again:"
                f" {', '.join(switched)}",
                stacklevel=2,
            )


class ExistingDatabaseMixin:
    """For a DiscoverRunner: the test databases exist already (see the module)."""

    def setup_databases(self, **kwargs):
        self.existing_test_databases = prepare(kwargs.get("aliases"), keep=self.keepdb)
        self.keepdb = True  # Django then neither creates nor drops them
        return super().setup_databases(**kwargs)

    def teardown_databases(self, old_config, **kwargs):
        super().teardown_databases(old_config, **kwargs)
        finish(self.existing_test_databases)


class ExistingDatabaseRunner(ExistingDatabaseMixin, DiscoverRunner):
    pass
