"""The economy-sync command, run as a user runs it: a subprocess."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from helpers import EXECUTABLE, drift, open_wallet, post, run
from psycopg import errors
from psycopg.conninfo import make_conninfo

from economy_sync import migrate
from economy_sync._paths import SOURCE_ROOT


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("economy-sync: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def drifted(conn):
    wallets = [open_wallet(conn, user) for user in (1, 2, 3)]
    for wallet_id in wallets:
        post(conn, wallet_id, "10.50", kind="prize")
    conn.execute("UPDATE economy.wallet SET balance = 0 WHERE user_id = 2")
    conn.execute("UPDATE economy.profile SET lifetime_earnings = 1 WHERE user_id = 3")
    return wallets


def test_help_lists_commands_and_exit_codes():
    result = run("--help")
    assert result.returncode == 0
    for word in ("migrate", "drift", "reconcile", "demo", "doctor", "exit codes"):
        assert word in result.stdout


def test_migrate_installs_the_schema(empty_dsn):
    result = run("migrate", dsn=empty_dsn)
    assert result.returncode == 0, result.stderr
    assert migrate.head_revision() in result.stdout
    assert run("migrate", env_dsn=empty_dsn).returncode == 0  # idempotent, via DATABASE_URL
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('economy.transaction')").fetchone()[0]


def test_drift_when_clean(dsn, conn):
    post(conn, open_wallet(conn, 1), "1")
    result = run("drift", dsn=dsn)
    assert result.returncode == 0
    assert "No drift" in result.stdout


def test_drift_shows_a_table_and_exits_1(dsn, drifted):
    result = run("drift", env_dsn=dsn)
    assert result.returncode == 1
    assert "wallet.balance" in result.stdout and "profile.lifetime_earnings" in result.stdout
    assert "+10.50" in result.stdout


def test_drift_shows_at_most_limit_rows_and_counts_the_rest(dsn, drifted):
    result = run("drift", "--json", "--limit", "1", dsn=dsn)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert (document["count"], document["omitted"], len(document["drift"])) == (2, 1, 1)
    shown = run("drift", "--limit", "1", dsn=dsn)
    assert "... and 1 more (--all shows every row); 2 in all" in shown.stdout
    assert len(json.loads(run("drift", "--json", "--all", dsn=dsn).stdout)["drift"]) == 2


def test_drift_json(dsn, drifted):
    result = run("drift", "--json", "--user-id", "2", dsn=dsn)
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "count": 1,
        "omitted": 0,
        "drift": [
            {
                "attachment": "economy",
                "user_id": 2,
                "wallet_id": drifted[1],
                "field": "wallet.balance",
                "cached_value": "0.00",
                "ledger_value": "10.50",
            }
        ],
    }


def test_reconcile_dry_run_is_the_default_and_exits_1(dsn, drifted, conn):
    result = run("reconcile", dsn=dsn)
    assert result.returncode == 1
    for line in ("Processed: 3", "Balance to sync: 1", "Earnings to sync: 1", "Errors: 0"):
        assert line in result.stdout
    assert len(drift(conn)) == 2


def test_reconcile_json_shape(dsn, drifted):
    result = run("reconcile", "--dry-run", "--all", "--json", dsn=dsn)
    document = json.loads(result.stdout)
    assert set(document) == {
        "dry_run", "run_id", "processed", "balance_fixes", "earnings_fixes", "errors",
        "checkpoint_skipped", "batches", "rows", "rows_omitted",
    }  # fmt: skip
    assert document["rows"][0] == {
        "attachment": "economy",
        "user_id": 2,
        "wallet_id": drifted[1],
        "field": "wallet.balance",
        "cached_value": "0.00",
        "ledger_value": "10.50",
        "fixed": False,
    }
    assert (document["processed"], document["errors"], document["dry_run"]) == (3, 0, True)


def test_reconcile_apply_repairs_and_second_run_is_clean(dsn, drifted, conn):
    result = run("reconcile", "--apply", "--all", "--batch-size", "2", dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert "Balance synced: 1" in result.stdout and "Earnings synced: 1" in result.stdout
    assert drift(conn) == []
    assert run("reconcile", dsn=dsn).returncode == 0


def test_reconcile_apply_for_one_user(dsn, drifted, conn):
    result = run("reconcile", "--apply", "--user-id", "3", "--json", dsn=dsn)
    assert json.loads(result.stdout)["earnings_fixes"] == 1
    assert [row[0] for row in drift(conn)] == [2]


def test_reconcile_limit(dsn, drifted):
    assert json.loads(run("reconcile", "--limit", "2", "--json", dsn=dsn).stdout)["processed"] == 2


def test_apply_needs_a_scope(dsn, drifted):
    assert_one_line_error(run("reconcile", "--apply", dsn=dsn), "--all")


@pytest.mark.parametrize("args", [["reconcile", "--batch-size", "0"], ["bogus"], []])
def test_usage_errors_exit_2(args, dsn):
    result = run(*args, dsn=dsn)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_no_database_given():
    assert_one_line_error(run("drift"), "--dsn", "DATABASE_URL")


def test_unreachable_server():
    assert_one_line_error(run("drift", dsn="postgresql://nobody@127.0.0.1:1/none"), "connect")


def test_malformed_dsn():
    assert_one_line_error(run("reconcile", dsn="this is not a dsn"), "connect")


@pytest.mark.parametrize(
    "secret_dsn",
    [
        "postgresql+psycopg://someone:s3cret@127.0.0.1:1/none",  # SQLAlchemy's form
        "postgresql://someone:s3cret@127.0.0.1:1/none",
        "host=127.0.0.1 port=1 user=someone password=s3cret dbname=none",
        "postgresql+psycopg://someone:s3cret@",  # malformed
        "password=s3cret host=",  # malformed
    ],
)
def test_a_password_in_the_dsn_is_never_echoed(secret_dsn):
    result = run("drift", dsn=secret_dsn)
    assert_one_line_error(result, "connect")
    assert "s3cret" not in result.stderr + result.stdout


def test_migrate_without_the_privilege_is_one_line(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as owner:
        owner.execute("DROP ROLE IF EXISTS economy_test_stranger_login")
        owner.execute("CREATE ROLE economy_test_stranger_login LOGIN")
        try:
            stranger = make_conninfo(empty_dsn, user="economy_test_stranger_login")
            result = run("migrate", dsn=stranger)
            assert_one_line_error(result, "permission denied", "owner of the database")
        finally:
            owner.execute("DROP ROLE economy_test_stranger_login")


def test_schema_not_installed(empty_dsn):
    assert_one_line_error(run("reconcile", dsn=empty_dsn), "economy-sync migrate")


def test_no_progress_bar_when_piped(dsn, drifted):
    result = run("reconcile", dsn=dsn)
    assert result.stderr == ""


def test_demo_on_a_given_empty_database(empty_dsn):
    result = run("demo", dsn=empty_dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "In sync." in result.stdout
    assert "Balance synced: 51" in result.stdout and "Errors: 0" in result.stdout


def test_demo_refuses_a_database_with_wallets(dsn, drifted):
    assert_one_line_error(run("demo", dsn=dsn), "empty database")


def test_demo_refuses_a_database_with_any_table(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE app_orders (id int)")
    assert_one_line_error(run("demo", dsn=empty_dsn), "empty database", "app_orders")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('economy')").fetchone() == (None,)


@pytest.mark.slow
def test_demo_never_writes_to_database_url_alone(empty_dsn):
    """DATABASE_URL, exported for the other commands, does not send the demo there."""
    result = run("demo", env_dsn=empty_dsn, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DATABASE_URL is left alone" in result.stdout
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('economy')").fetchone() == (None,)


def test_demo_without_database_runs_on_a_throwaway_server():
    result = run("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("Starting a throwaway PostgreSQL", "In sync.", "Stopping the throwaway"):
        assert step in result.stdout


# Runs a command on a pseudo-terminal, as a person at a terminal would.
ON_A_TERMINAL = "import pty, sys; pty.spawn(sys.argv[1:])"


def test_progress_bar_on_a_terminal(dsn, drifted):
    command = [str(EXECUTABLE), "reconcile", "--dsn", dsn]
    done = subprocess.run(
        [sys.executable, "-c", ON_A_TERMINAL, *command],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert "checking" in done.stdout and "3/3" in done.stdout


def test_version_names_the_package_and_schema_revision():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("economy-sync ")
    assert migrate.head_revision() in result.stdout
    assert "database" not in result.stdout


def test_version_names_the_databases_revision_too(dsn):
    at_head = run("--version", env_dsn=dsn)
    assert f"database: schema revision {migrate.head_revision()}" in at_head.stdout


def test_version_of_a_database_without_the_schema_or_unreachable(empty_dsn):
    assert "database: schema revision none" in run("--version", env_dsn=empty_dsn).stdout
    unreachable = run("--dsn", "postgresql://x:s3cret@127.0.0.1:1/none", "--version")
    assert unreachable.returncode == 0 and "database: schema revision unknown" in unreachable.stdout
    assert "s3cret" not in unreachable.stdout


def test_metrics_in_prometheus_text_format(dsn, conn, drifted):
    result = run("metrics", dsn=dsn)
    assert result.returncode == 0, result.stderr
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in result.stdout.splitlines()
        if line and not line.startswith("#")
    }
    assert all(name.startswith("economy_") for name in samples)
    assert samples['economy_drift_fields{attachment="economy",field="wallet.balance"}'] == 1
    assert samples['economy_holds_past_expiry{attachment="economy"}'] == 0
    assert 'economy_checkpoint_lag_entries{attachment="economy"}' in samples
    assert samples["economy_metrics_last_success_timestamp_seconds"] > 0


def test_a_permission_error_names_the_role_needed(dsn, conn, drifted):
    conn.execute("DROP ROLE IF EXISTS economy_test_reader")
    conn.execute("CREATE ROLE economy_test_reader LOGIN IN ROLE economy_app")
    try:
        reader = make_conninfo(dsn, user="economy_test_reader")
        result = run("reconcile", "--apply", "--all", dsn=reader)
        assert_one_line_error(result, "permission denied", "economy_operator")
    finally:
        conn.execute("DROP ROLE economy_test_reader")


def test_output_cut_short_by_the_reader_is_no_error(dsn, drifted):
    done = subprocess.run(
        ["bash", "-c", f"{EXECUTABLE} drift --json --dsn '{dsn}' | head -c 1;"
         " exit ${PIPESTATUS[0]}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    assert done.returncode == 1  # drift found, whether or not the reader read it all


def test_prune_log_deletes_only_the_old_fixes(dsn, conn, drifted, login):
    assert run("reconcile", "--apply", "--all", dsn=dsn).returncode == 0
    conn.execute(
        "UPDATE economy.reconcile_log SET at = now() - interval '100 days' WHERE user_id = 2"
    )
    result = run("prune-log", "--older-than", "90d", dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert "Pruned reconcile_log rows: 1" in result.stdout
    assert conn.execute("SELECT user_id FROM economy.reconcile_log").fetchall() == [(3,)]
    with pytest.raises(errors.InsufficientPrivilege):
        login("economy_app").execute("SELECT economy.prune_reconcile_log('1 day')")
    with pytest.raises(errors.InvalidParameterValue):
        conn.execute("SELECT economy.prune_reconcile_log('-1 day')")


def test_doctor_json(dsn, drifted):
    result = run("doctor", "--json", dsn=dsn)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert any(
        not finding["ok"] and "disagree" in finding["message"] for finding in report["findings"]
    )
    assert all(set(finding) == {"ok", "message"} for finding in report["findings"])


def test_ctrl_c_during_a_repair_reports_the_batches_done(dsn, conn):
    """Interrupted, a real reconcile stops with exit 130 and says what its
    committed batches did; running it again finishes the work."""
    conn.execute("INSERT INTO economy.profile (user_id) SELECT g FROM generate_series(1, 20000) g")
    conn.execute(
        "INSERT INTO economy.wallet (user_id, balance) SELECT g, 1 FROM generate_series(1, 20000) g"
    )
    command = [str(EXECUTABLE), "reconcile", "--apply", "--all", "--batch-size", "5"]
    running = subprocess.Popen(
        [*command, "--dsn", dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as at a terminal: a test run started in the background inherits SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    # more than one batch logged: the first one's counts are in the summary by then
    # (a batch's counts are added right after its commit, before the next batch)
    while (
        time.monotonic() < deadline
        and conn.execute("SELECT count(*) FROM economy.reconcile_log").fetchone()[0] <= 5
    ):
        time.sleep(0.05)
    running.send_signal(signal.SIGINT)
    _, stderr = running.communicate(timeout=60)
    assert running.returncode == 130, stderr
    assert "interrupted (safe to run again)" in stderr
    assert "Traceback" not in stderr
    done = int(re.search(r"Balance synced: (\d+)", stderr).group(1))
    logged = conn.execute("SELECT count(*) FROM economy.reconcile_log").fetchone()[0]
    assert 0 < done <= logged  # a batch may commit between the count and the signal
    assert run("reconcile", "--apply", "--all", dsn=dsn).returncode == 0
    assert drift(conn) == []


def documented_cron_check() -> str:
    """The drift check's command of docs/OPERATIONS.md's crontab, as written."""
    text = (SOURCE_ROOT / "docs" / "OPERATIONS.md").read_text()
    crontab = re.search(r"```cron\n(.*?)```", text, re.S).group(1)
    return crontab.splitlines()[0].split(None, 5)[5]


@pytest.mark.parametrize("case", ["in_sync", "drifted", "unreachable"])
def test_the_documented_cron_check_repairs_drift_and_reports_errors(case, dsn, conn):
    if case == "drifted":
        post(conn, open_wallet(conn, 1), "5")
        conn.execute("UPDATE economy.profile SET balance = 0")
    database = "postgresql://nobody@127.0.0.1:1/none" if case == "unreachable" else dsn
    env = {**os.environ, "DATABASE_URL": database, "PATH": f"{EXECUTABLE.parent}:/usr/bin:/bin"}
    done = subprocess.run(
        ["sh", "-c", documented_cron_check()], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == {"in_sync": 0, "drifted": 0, "unreachable": 2}[case], done
    if case == "drifted":
        assert drift(conn) == []
