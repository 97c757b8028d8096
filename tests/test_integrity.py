"""The attacks of an adversarial review, run as the roles an attacker would have
(logins granted economy_app or economy_operator), and where the rule is "from
anyone", as the superuser: each refused, nothing written, drift still truthful."""

import io
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from decimal import Decimal

import psycopg
import pytest
from helpers import PACKAGE_ROLES, balances, drift, open_wallet, post, state
from psycopg import errors

from economy_sync import advance_checkpoint, audit_ledger_checkpoint, reconcile, set_hot
from economy_sync.cli import main as cli

MAX_AMOUNT = Decimal("999999999999999.99")


@pytest.fixture
def wallets(conn):
    """Wallets 1 (100.00) and 2 (50.00); 3 empty."""
    ids = [open_wallet(conn, user) for user in (1, 2, 3)]
    post(conn, ids[0], "100", kind="prize")
    post(conn, ids[1], "50", kind="prize")
    return ids


def total_money(conn) -> Decimal:
    return conn.execute("SELECT sum(balance) FROM economy.wallet").fetchone()[0]


def assert_truthful(conn) -> None:
    """Caches equal the ledger, by the checkpointed check and by a full sum."""
    assert drift(conn) == []
    assert audit_ledger_checkpoint(conn) == []
    assert conn.execute(
        "SELECT count(*) FROM economy.wallet w WHERE w.balance <>"
        " (SELECT coalesce(sum(t.amount), 0) FROM economy.transaction t WHERE t.wallet_id = w.id)"
    ).fetchone() == (0,)


# 1. Ledger ids and created_at are the database's


@pytest.mark.parametrize("role", PACKAGE_ROLES)
@pytest.mark.parametrize(
    "insert",
    [
        "INSERT INTO economy.transaction (id, wallet_id, amount, kind)"
        " OVERRIDING SYSTEM VALUE VALUES (2, %(w)s, -5, 'fee')",
        "INSERT INTO economy.transaction (id, wallet_id, amount, kind)"
        " OVERRIDING SYSTEM VALUE VALUES (1000000, %(w)s, 5, 'prize')",
        "INSERT INTO economy.transaction (id, wallet_id, amount, kind)"
        " OVERRIDING SYSTEM VALUE SELECT g, %(w)s, 1, 'prize' FROM generate_series(10, 20) g",
        "INSERT INTO economy.transaction (wallet_id, amount, kind, created_at)"
        " VALUES (%(w)s, 5, 'prize', now() - interval '1 year')",
        "INSERT INTO economy.transaction (wallet_id, amount, kind, transfer_debit_id)"
        " VALUES (%(w)s, 5, 'transfer', 1)",
    ],
    ids=["id_below", "id_above", "id_range", "backdated", "transfer_link"],
)
def test_package_roles_cannot_choose_database_columns(conn, login, wallets, role, insert):
    advance_checkpoint(conn)
    before = state(conn)
    with pytest.raises(errors.InsufficientPrivilege):
        login(role).execute(insert, {"w": wallets[0]})
    assert state(conn) == before
    assert_truthful(conn)


def rolled_back_id(conn, wallet_id) -> int:
    """An id the identity handed out to an insert that then rolled back: a gap."""
    with conn.transaction():
        gap = post(conn, wallet_id, "1")["id"]
        raise psycopg.Rollback  # leaves the transaction block, rolled back
    return gap


def test_nobody_may_write_at_or_below_the_safe_horizon(conn, wallets):
    """The superuser too: an entry in a gap below the checkpoint would be in
    the caches but never in the checkpoint, and a reconcile would then
    'repair' the caches to a wrong value."""
    gap = rolled_back_id(conn, wallets[0])
    post(conn, wallets[0], "1")
    advance_checkpoint(conn)
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="safe horizon"):
        conn.execute(
            "INSERT INTO economy.transaction (id, wallet_id, amount, kind)"
            " OVERRIDING SYSTEM VALUE VALUES (%s, %s, -50, 'fee')",
            [gap, wallets[0]],
        )
    assert state(conn) == before
    reconcile(conn, dry_run=False)
    assert state(conn) == before
    assert_truthful(conn)


@pytest.mark.parametrize("idempotency_key", [None, "late-credit"])
def test_a_credit_to_a_hot_wallet_below_the_safe_horizon_is_refused(conn, wallets, idempotency_key):
    """A hot wallet's credit is parked, not applied: its path checks the horizon too."""
    gap = rolled_back_id(conn, wallets[0])
    post(conn, wallets[0], "1")
    advance_checkpoint(conn)
    set_hot(conn, wallets[0])
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="safe horizon"):
        conn.execute(
            "INSERT INTO economy.transaction (id, wallet_id, amount, kind, idempotency_key)"
            " OVERRIDING SYSTEM VALUE VALUES (%s, %s, 50, 'prize', %s)",
            [gap, wallets[0], idempotency_key],
        )
    assert state(conn) == before
    assert conn.execute("SELECT count(*) FROM economy.hot_credit").fetchone() == (0,)


def test_a_high_chosen_id_does_not_move_the_horizon(conn, wallets):
    """The horizon is the identity's last value, not max(id): entries still to
    come keep being counted after a superuser's insert with a high id."""
    conn.execute(
        "INSERT INTO economy.transaction (id, wallet_id, amount, kind)"
        " OVERRIDING SYSTEM VALUE VALUES (1000000, %s, 5, 'prize')",
        [wallets[2]],
    )
    reconcile(conn, dry_run=False)
    last = post(conn, wallets[2], "7")["id"]
    assert last < 1000000
    reconcile(conn, dry_run=False)
    assert conn.execute("SELECT safe_up_to FROM economy.ledger_horizon").fetchone() == (last,)
    assert balances(conn, wallets[2])[0] == Decimal("12.00")
    assert_truthful(conn)


def test_ledger_ids_stay_generated_always(conn, wallets):
    with pytest.raises(errors.GeneratedAlways):
        conn.execute(
            "INSERT INTO economy.transaction (id, wallet_id, amount, kind)"
            " VALUES (1, %s, 1, 'fee')",
            [wallets[0]],
        )


# 2. Reversing a leg of a transfer reverses both


def transfer(c, source, target, amount):
    rows = c.execute("SELECT id FROM economy.transfer(%s, %s, %s)", [source, target, amount])
    return [row[0] for row in rows]  # debit, credit


@pytest.mark.parametrize("leg", ["debit", "credit"])
@pytest.mark.parametrize("role", PACKAGE_ROLES)
def test_reversing_either_leg_reverses_the_transfer(conn, login, wallets, role, leg):
    c = login(role)
    debit, credit = transfer(c, wallets[0], wallets[1], Decimal("30"))
    given, other = (debit, credit) if leg == "debit" else (credit, debit)
    total = total_money(conn)
    reversal = c.execute(
        "SELECT reverses_id, amount FROM economy.reverse_transaction(%s)", [given]
    ).fetchone()
    assert reversal[0] == given
    assert total_money(conn) == total
    assert balances(conn, wallets[0])[0] == Decimal("100.00")
    assert balances(conn, wallets[1])[0] == Decimal("50.00")
    before = state(conn)
    with pytest.raises(errors.UniqueViolation, match="already reversed"):
        c.execute("SELECT economy.reverse_transaction(%s)", [other])
    assert state(conn) == before
    assert_truthful(conn)


def test_an_insert_naming_a_transfer_leg_reverses_both(conn, login, wallets):
    app = login("economy_app")
    debit, credit = transfer(app, wallets[0], wallets[1], Decimal("30"))
    total = total_money(conn)
    app.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind, reverses_id)"
        " VALUES (%s, -30, 'transfer', %s)",
        [wallets[1], credit],
    )
    assert total_money(conn) == total
    reversed_ids = conn.execute(
        "SELECT reverses_id FROM economy.transaction WHERE reverses_id IS NOT NULL ORDER BY 1"
    ).fetchall()
    assert reversed_ids == [(debit,), (credit,)]
    assert_truthful(conn)


def test_a_transfer_reversal_that_would_overdraw_is_refused_whole(conn, wallets):
    debit, _ = transfer(conn, wallets[0], wallets[2], Decimal("30"))
    post(conn, wallets[2], "-30", kind="purchase")  # the receiver spent it
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="overdraft"):
        conn.execute("SELECT economy.reverse_transaction(%s)", [debit])
    assert state(conn) == before


def test_racing_reversals_of_both_legs_reverse_the_transfer_once(conn, connect, wallets):
    debit, credit = transfer(conn, wallets[0], wallets[1], Decimal("30"))
    total = total_money(conn)
    conns = [connect() for _ in range(8)]
    start = threading.Barrier(len(conns))
    outcomes = []

    def reverse(c, leg):
        start.wait()
        try:
            c.execute("SELECT economy.reverse_transaction(%s)", [leg])
            outcomes.append("reversed")
        except errors.UniqueViolation:
            outcomes.append("already reversed")

    threads = [
        threading.Thread(target=reverse, args=(c, (debit, credit)[n % 2]))
        for n, c in enumerate(conns)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["already reversed"] * 7 + ["reversed"]
    assert total_money(conn) == total
    assert conn.execute(
        "SELECT count(*) FROM economy.transaction WHERE reverses_id IS NOT NULL"
    ).fetchone() == (2,)
    assert_truthful(conn)


# 3. Overdraft limits are numbers from 0, with at most 2 decimals


@pytest.mark.parametrize(
    ("limit", "error"),
    [
        (None, errors.NotNullViolation),
        (Decimal("NaN"), errors.CheckViolation),
        (Decimal("Infinity"), errors.CheckViolation),
        (Decimal("-Infinity"), errors.CheckViolation),
        (Decimal("-1"), errors.CheckViolation),
        (Decimal("1.005"), errors.CheckViolation),
        (Decimal("1e18"), errors.CheckViolation),
    ],
    ids=["null", "nan", "infinity", "minus_infinity", "negative", "three_decimals", "too_large"],
)
def test_open_wallet_refuses_a_bad_overdraft_limit(conn, login, limit, error):
    before = state(conn)
    with pytest.raises(error):
        login("economy_app").execute(
            "SELECT economy.open_wallet(10, overdraft_limit => %s::numeric)", [limit]
        )
    assert state(conn) == before


@pytest.mark.parametrize("limit", ["NaN", "Infinity", "-1", "1.005"])
def test_the_overdraft_limit_column_refuses_bad_values(conn, wallets, limit):
    before = state(conn)
    with pytest.raises(errors.CheckViolation):
        conn.execute("UPDATE economy.wallet SET overdraft_limit = %s::numeric", [limit])
    assert state(conn) == before


def test_a_valid_limit_is_stored_with_2_decimals(conn):
    wallet_id = open_wallet(conn, 10, overdraft_limit="25")
    limit = conn.execute("SELECT overdraft_limit FROM economy.wallet WHERE id = %s", [wallet_id])
    assert str(limit.fetchone()[0]) == "25.00"


# 5. mark_ledger_horizon bounds its own wait


def test_mark_ledger_horizon_gives_up_by_itself(connect, wallets):
    writer = connect(autocommit=False)
    post(writer, wallets[0], "7")  # holds the ledger until it commits
    marker = connect()
    marker.execute("SET lock_timeout = 0")  # the caller sets no bound
    started = time.monotonic()
    with pytest.raises(errors.LockNotAvailable, match="checkpoint was not advanced"):
        marker.execute("SELECT economy.mark_ledger_horizon()")
    assert time.monotonic() - started < 10
    assert marker.execute("SHOW lock_timeout").fetchone() == ("0",)
    writer.rollback()


def test_cli_reports_a_skipped_checkpoint(connect, dsn, wallets):
    writer = connect(autocommit=False)
    post(writer, wallets[0], "7")
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = cli(["--dsn", dsn, "reconcile", "--apply", "--all", "--json"])
    writer.rollback()
    assert code == 3
    assert "checkpoint was not advanced" in err.getvalue()
    assert '"checkpoint_skipped": true' in out.getvalue()


# 6. The bulk-load recipe, exactly as users write it


def test_bulk_load_recipe_in_one_transaction(conn, wallets):
    with conn.transaction():
        conn.execute("ALTER TABLE economy.transaction DISABLE TRIGGER USER")
        with conn.cursor().copy(
            "COPY economy.transaction (wallet_id, amount, kind, memo) FROM STDIN"
        ) as copy:
            for wallet_id in wallets:
                copy.write_row((wallet_id, Decimal("12.34"), "prize", "imported"))
        conn.execute("ALTER TABLE economy.transaction ENABLE TRIGGER USER")
    assert len(drift(conn)) == 3 * len(wallets)
    reconcile(conn, dry_run=False)
    assert_truthful(conn)


def test_a_hot_wallet_creates_no_multixact(conn, connect, wallets):
    """The wallet foreign key is checked after apply_entry has locked the row:
    its KEY SHARE lock never joins another transaction's update of that row.
    Shown two ways: while a writer's entry is in flight and a second writer
    queues, the row's xmax is the first writer's own transaction id (readable by
    anyone); and, where the role may run CHECKPOINT (not on a managed server),
    no MultiXact is counted over six writers racing on the wallet."""
    first, second = connect(autocommit=False), connect(autocommit=False)
    post(first, wallets[2], "1")
    first_xid = first.execute("SELECT pg_current_xact_id()::xid::text").fetchone()[0]
    queued = threading.Thread(target=lambda: (post(second, wallets[2], "1"), second.commit()))
    queued.start()
    time.sleep(0.3)  # the second writer now waits for the row
    assert conn.execute(
        "SELECT xmax::text FROM economy.wallet WHERE id = %s", [wallets[2]]
    ).fetchone() == (first_xid,)
    first.commit()
    queued.join()

    may_checkpoint = conn.execute(
        "SELECT rolsuper OR pg_has_role(current_user, 'pg_checkpoint', 'USAGE')"
        " FROM pg_roles WHERE rolname = current_user"
    ).fetchone()[0]

    def next_multixact() -> int:
        conn.execute("CHECKPOINT")
        return conn.execute("SELECT next_multixact_id FROM pg_control_checkpoint()").fetchone()[0]

    before = next_multixact() if may_checkpoint else None
    conns = [connect() for _ in range(6)]
    start = threading.Barrier(len(conns))

    def credit(c):
        start.wait()
        for _ in range(50):
            post(c, wallets[2], "1")

    threads = [threading.Thread(target=credit, args=(c,)) for c in conns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert balances(conn, wallets[2])[0] == Decimal("302.00")
    if may_checkpoint:
        assert next_multixact() == before


# 7. One reconcile run, one run_id


def test_one_reconcile_run_logs_one_run_id(conn, wallets):
    conn.execute("UPDATE economy.wallet SET balance = balance + 1")
    summary = reconcile(conn, dry_run=False, batch_size=1)
    assert summary.batches == 3
    run_ids = conn.execute("SELECT DISTINCT run_id::text FROM economy.reconcile_log").fetchall()
    assert run_ids == [(summary.run_id,)]


def test_cli_json_reports_the_run_id(conn, dsn, wallets):
    conn.execute("UPDATE economy.wallet SET balance = balance + 1")
    out = io.StringIO()
    with redirect_stdout(out):
        assert (
            cli(["--dsn", dsn, "reconcile", "--apply", "--all", "--json", "--batch-size", "1"]) == 0
        )
    run_id = conn.execute("SELECT DISTINCT run_id::text FROM economy.reconcile_log").fetchall()
    assert f'"run_id": "{run_id[0][0]}"' in out.getvalue()


# 8. Caches hold any sum the ledger can reach


def test_caches_hold_sums_beyond_numeric_20_2(conn, login, wallets):
    login("economy_app").execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind)"
        " SELECT %s, %s, 'prize' FROM generate_series(1, 2000)",
        [wallets[2], MAX_AMOUNT],
    )
    assert balances(conn, wallets[2]) == (MAX_AMOUNT * 2000,) * 3
    reconcile(conn, dry_run=False)
    assert_truthful(conn)


# Keep a full audit possible


def test_audit_finds_a_tampered_checkpoint_and_reset_repairs_it(conn, dsn, wallets):
    advance_checkpoint(conn)
    conn.execute("UPDATE economy.ledger_checkpoint SET balance = balance + 1 WHERE wallet_id = 1")
    assert [(m.wallet_id, m.field) for m in audit_ledger_checkpoint(conn)] == [(1, "balance")]
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli(["--dsn", dsn, "audit"]) == 1
    conn.execute("SELECT economy.reset_ledger_checkpoint()")
    advance_checkpoint(conn)
    assert_truthful(conn)
