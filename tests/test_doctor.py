"""economy-sync doctor: one line per finding, non-zero exit when something is wrong."""

import psycopg
import pytest
from helpers import open_wallet, post, run, state
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def test_healthy_installation(dsn, conn):
    post(conn, open_wallet(conn, 1), "5")
    result = run("doctor", dsn=dsn)
    assert result.returncode == 0, result.stdout
    assert "PROBLEM" not in result.stdout
    for fragment in ("latest migration", "apply_entry present and enabled", "granted as designed"):
        assert fragment in result.stdout


def problems(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]


def test_disabled_sync_trigger(dsn, conn):
    conn.execute("ALTER TABLE economy.transaction DISABLE TRIGGER apply_entry")
    result = run("doctor", dsn=dsn)
    assert result.returncode == 1
    assert problems(result) == [
        "PROBLEM trigger apply_entry is disabled: ALTER TABLE economy.transaction ENABLE TRIGGER"
        " apply_entry; then run `economy-sync reconcile --apply --all`"
    ]


def test_replica_only_trigger(dsn, conn):
    conn.execute("ALTER TABLE economy.transaction ENABLE REPLICA TRIGGER apply_entry")
    assert "enabled only for replicas" in problems(run("doctor", dsn=dsn))[0]


def test_role_that_skips_triggers(dsn, conn):
    database = conn.info.dbname
    skip_triggers = (
        f'ALTER ROLE economy_app IN DATABASE "{database}" SET session_replication_role = replica'
    )
    if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        # only a superuser can set it: on a managed server the threat does not exist
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(skip_triggers)
        return
    conn.execute(skip_triggers)
    try:
        found = problems(run("doctor", dsn=dsn))
    finally:
        conn.execute(
            f'ALTER ROLE economy_app IN DATABASE "{database}" RESET session_replication_role'
        )
    assert len(found) == 1 and "economy_app" in found[0] and "session_replication_role" in found[0]


def test_drift_is_a_finding(dsn, conn):
    post(conn, open_wallet(conn, 1), "5")
    conn.execute("UPDATE economy.wallet SET balance = 0")
    assert "1 cached field disagrees" in problems(run("doctor", dsn=dsn))[0]


def test_grant_not_as_designed(dsn, conn):
    conn.execute("GRANT UPDATE ON economy.wallet TO economy_app")
    assert problems(run("doctor", dsn=dsn)) == [
        "PROBLEM grant not as designed: economy_app can UPDATE economy.wallet; reinstall the grants"
        " (sql/40_roles.sql)",
        "PROBLEM grant not as designed: economy_operator can UPDATE economy.wallet; reinstall the"
        " grants (sql/40_roles.sql)",
    ]


def test_app_that_may_choose_ledger_ids(dsn, conn):
    conn.execute("GRANT INSERT (id) ON economy.transaction TO economy_app")
    assert "economy_app can choose economy.transaction.id" in problems(run("doctor", dsn=dsn))[0]


def test_old_or_foreign_revision(dsn, conn):
    conn.execute("COMMENT ON SCHEMA economy IS 'economy-sync (revision 0000_older)'")
    assert "run `economy-sync migrate`" in problems(run("doctor", dsn=dsn))[0]


def test_schema_missing(empty_dsn):
    result = run("doctor", dsn=empty_dsn)
    assert result.returncode == 1
    assert problems(result) == ["PROBLEM schema economy is missing: run `economy-sync migrate`"]


@pytest.fixture
def reader_dsn(dsn, conn):
    """A login with no write privilege and no CREATEDB, only economy_app's reads."""
    conn.execute("DROP ROLE IF EXISTS economy_test_reader")  # left by an interrupted run
    conn.execute("CREATE ROLE economy_test_reader LOGIN NOCREATEDB IN ROLE economy_app")
    conn.execute("ALTER ROLE economy_test_reader SET default_transaction_read_only = on")
    yield make_conninfo(dsn, user="economy_test_reader")
    conn.execute("DROP ROLE economy_test_reader")  # it owns nothing: it may only read


def test_runs_read_only_without_privileges_and_changes_nothing(reader_dsn, conn):
    post(conn, open_wallet(conn, 1), "5")
    before = state(conn)
    result = run("doctor", dsn=reader_dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert state(conn) == before
    with (
        psycopg.connect(reader_dsn) as reader,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        reader.execute("SELECT economy.open_wallet(2)")
    assert conninfo_to_dict(reader_dsn)["user"] == "economy_test_reader"
