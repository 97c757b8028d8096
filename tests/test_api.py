"""The Python API, on the real database."""

import threading
from decimal import Decimal

import psycopg
import pytest
from helpers import balances, drift, open_wallet, post

from economy_sync import (
    DriftRow,
    ReconcileRow,
    WalletNotFound,
    get_balance_drift,
    recompute_lifetime_earnings,
    reconcile,
    sync_profile_by_user_id,
    sync_wallet_to_profile,
)


@pytest.fixture
def wallet(conn):
    wallet_id = open_wallet(conn, 1)
    post(conn, wallet_id, "30", kind="prize")
    post(conn, wallet_id, "5", kind="refund")
    return wallet_id


def test_get_balance_drift_is_empty_when_in_sync(conn, wallet):
    assert get_balance_drift(conn, wallet) == []


def test_get_balance_drift_returns_typed_rows(conn, wallet):
    conn.execute("UPDATE economy.wallet SET balance = 1")
    assert get_balance_drift(conn, wallet) == [
        DriftRow(1, wallet, "wallet.balance", Decimal("1.00"), Decimal("35.00"))
    ]


def test_get_balance_drift_only_reports_that_wallet(conn, wallet):
    other = open_wallet(conn, 2)
    conn.execute("UPDATE economy.wallet SET balance = 9 WHERE id = %s", [other])
    assert get_balance_drift(conn, wallet) == []


def test_unknown_wallet_raises_wallet_not_found(conn):
    with pytest.raises(WalletNotFound, match="wallet 404"):
        get_balance_drift(conn, 404)
    with pytest.raises(WalletNotFound):
        recompute_lifetime_earnings(conn, 404)
    with pytest.raises(WalletNotFound):
        sync_wallet_to_profile(conn, 404)


def test_recompute_lifetime_earnings_reads_the_ledger(conn, wallet):
    conn.execute("UPDATE economy.profile SET lifetime_earnings = 0")
    earnings = recompute_lifetime_earnings(conn, wallet)
    assert earnings == Decimal("30.00") and isinstance(earnings, Decimal)


def test_recompute_lifetime_earnings_of_empty_wallet_is_zero(conn):
    assert recompute_lifetime_earnings(conn, open_wallet(conn, 3)) == Decimal("0.00")


def test_sync_wallet_to_profile_repairs_and_reports(conn, wallet):
    conn.execute("UPDATE economy.profile SET balance = 0, lifetime_earnings = 0")
    changed = sync_wallet_to_profile(conn, wallet)
    assert changed == [
        ReconcileRow(1, wallet, "profile.balance", Decimal("0.00"), Decimal("35.00"), True),
        ReconcileRow(
            1, wallet, "profile.lifetime_earnings", Decimal("0.00"), Decimal("30.00"), True
        ),
    ]
    assert balances(conn, wallet) == (Decimal("35.00"), Decimal("35.00"), Decimal("30.00"))
    assert sync_wallet_to_profile(conn, wallet) == []
    assert conn.execute("SELECT count(*) FROM economy.reconcile_log").fetchone() == (2,)


def test_sync_profile_by_user_id_repairs_wallet_too(conn, wallet):
    conn.execute("UPDATE economy.wallet SET balance = 0")
    changed = sync_profile_by_user_id(conn, 1)
    assert [row.field for row in changed] == ["wallet.balance"]
    assert drift(conn) == []


@pytest.mark.parametrize("sync", ["by_user", "by_wallet"])
def test_sync_commits_on_a_non_autocommit_connection(connect, wallet, conn, sync):
    conn.execute("UPDATE economy.wallet SET balance = 0")
    manual = connect(autocommit=False)
    if sync == "by_user":
        sync_profile_by_user_id(manual, 1)
    else:
        sync_wallet_to_profile(manual, wallet)
    manual.close()
    assert drift(conn) == []


@pytest.fixture
def many(conn):
    conn.execute("SELECT economy.open_wallet(u) FROM generate_series(1, 250) u")
    conn.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind)"
        " SELECT id, 2, 'prize' FROM economy.wallet"
    )
    conn.execute("UPDATE economy.wallet SET balance = 0 WHERE user_id % 10 = 0")  # 25 wallets
    conn.execute("UPDATE economy.profile SET lifetime_earnings = 1 WHERE user_id <= 5")
    return 250


def test_reconcile_dry_run_counts_and_writes_nothing(conn, many):
    before = drift(conn)
    summary = reconcile(conn, batch_size=40)
    assert (summary.processed, summary.balance_fixes, summary.earnings_fixes) == (250, 25, 5)
    assert summary.batches == 7 and summary.errors == 0 and summary.dry_run
    assert not any(row.fixed for row in summary.rows)
    assert drift(conn) == before


def test_reconcile_apply_repairs_everything(conn, many):
    summary = reconcile(conn, dry_run=False, batch_size=40)
    assert summary.drift_found == 30
    assert all(row.fixed for row in summary.rows)
    assert drift(conn) == []
    assert reconcile(conn, dry_run=False).drift_found == 0


def test_reconcile_reports_progress_for_every_user(conn, many):
    seen = []
    reconcile(conn, batch_size=64, progress=seen.append)
    assert seen == [64, 64, 64, 58]


def test_reconcile_user_ids_and_limit(conn, many):
    assert reconcile(conn, user_ids=[10, 20, 21, 20]).processed == 3
    assert reconcile(conn, user_ids=[10, 20, 21]).balance_fixes == 2
    limited = reconcile(conn, dry_run=False, limit=100, batch_size=30)
    assert limited.processed == 100
    assert {row[0] for row in drift(conn)} == set(range(110, 251, 10))


def test_reconcile_keeps_a_bounded_number_of_rows(conn, many):
    summary = reconcile(conn, max_rows=10)
    assert len(summary.rows) == 10 and summary.rows_omitted == 20


def test_reconcile_skips_a_locked_batch_and_counts_it(conn, many, connect):
    blocker = connect(autocommit=False)
    blocker.execute("SELECT 1 FROM economy.wallet WHERE user_id = 10 FOR UPDATE")
    summary = reconcile(conn, dry_run=False, batch_size=50, lock_timeout="200ms")
    blocker.rollback()
    assert summary.errors == 1
    assert {row[0] for row in drift(conn)} <= set(range(1, 51))  # only the skipped batch left
    assert reconcile(conn, dry_run=False).errors == 0
    assert drift(conn) == []


def test_reconcile_refuses_bad_arguments(conn):
    with pytest.raises(ValueError):
        reconcile(conn, batch_size=0)
    with pytest.raises(ValueError):
        reconcile(conn, limit=-1)


def test_reconcile_refuses_to_run_inside_a_transaction(connect):
    manual = connect(autocommit=False)
    manual.execute("SELECT 1")
    with pytest.raises(RuntimeError):
        reconcile(manual)


def test_reconcile_beside_a_writer_loses_nothing(conn, many, dsn):
    stop = threading.Event()

    def write():
        with psycopg.connect(dsn, autocommit=True) as c:
            while not stop.is_set():
                post(c, 7, "1")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        summary = reconcile(conn, dry_run=False, batch_size=20)
    finally:
        stop.set()
        writer.join()
    assert summary.drift_found == 30
    assert drift(conn) == []
