"""balance_drift and reconcile_economy: finding and repairing caches that
disagree with the ledger."""

from decimal import Decimal

import pytest
from helpers import balances, drift, load_without_sync, open_wallet, post, state
from psycopg import errors


def reconcile(conn, **arguments):
    names = ", ".join(f"{name} => %({name})s" for name in arguments)
    return conn.execute(f"SELECT * FROM economy.reconcile_economy({names})", arguments).fetchall()


@pytest.fixture
def wallets(conn):
    ids = [open_wallet(conn, user) for user in (1, 2, 3)]
    for wallet_id in ids:
        post(conn, wallet_id, "10", kind="prize")
    return ids


def test_no_drift_after_normal_use(conn, wallets):
    assert drift(conn) == []
    assert reconcile(conn) == []


def test_drift_reports_each_drifted_field(conn, wallets):
    load_without_sync(conn, wallets[0], "5", kind="prize")
    assert drift(conn) == [
        (1, wallets[0], "wallet.balance", Decimal("10.00"), Decimal("15.00")),
        (1, wallets[0], "profile.balance", Decimal("10.00"), Decimal("15.00")),
        (1, wallets[0], "profile.lifetime_earnings", Decimal("10.00"), Decimal("15.00")),
    ]


def test_manual_update_of_one_cache_is_drift(conn, wallets):
    conn.execute("UPDATE economy.profile SET lifetime_earnings = 0 WHERE user_id = 2")
    assert drift(conn) == [
        (2, wallets[1], "profile.lifetime_earnings", Decimal("0.00"), Decimal("10.00"))
    ]


def test_drift_filtered_by_user_ids(conn, wallets):
    conn.execute("UPDATE economy.wallet SET balance = 1")
    rows = conn.execute("SELECT user_id FROM economy.balance_drift(user_ids => ARRAY[2, 3])")
    assert [row[0] for row in rows] == [2, 3]


def test_profile_without_wallet_must_be_zero(conn, wallets):
    conn.execute("INSERT INTO economy.profile (user_id, balance) VALUES (99, 3)")
    assert drift(conn) == [(99, None, "profile.balance", Decimal("3.00"), Decimal("0.00"))]
    reconcile(conn, dry_run=False)
    assert drift(conn) == []


def test_wallet_without_entries_compares_to_zero(conn):
    wallet_id = open_wallet(conn, 5)
    conn.execute("UPDATE economy.wallet SET balance = 2 WHERE id = %s", [wallet_id])
    assert drift(conn) == [(5, wallet_id, "wallet.balance", Decimal("2.00"), Decimal("0.00"))]


def test_dry_run_lists_drift_and_writes_nothing(conn, wallets):
    load_without_sync(conn, wallets[1], "-3", kind="fee")
    before = state(conn)
    rows = reconcile(conn, dry_run=True)
    assert rows == [
        (2, wallets[1], "wallet.balance", Decimal("10.00"), Decimal("7.00"), False),
        (2, wallets[1], "profile.balance", Decimal("10.00"), Decimal("7.00"), False),
    ]
    assert state(conn) == before


def test_dry_run_is_the_default(conn, wallets):
    conn.execute("UPDATE economy.wallet SET balance = 0")
    before = state(conn)
    assert {row[-1] for row in reconcile(conn)} == {False}
    assert state(conn) == before


def test_real_run_repairs_logs_and_second_run_finds_nothing(conn, wallets):
    load_without_sync(conn, wallets[0], "2.50", kind="reward", rows=4)
    conn.execute("UPDATE economy.wallet SET balance = 99 WHERE id = %s", [wallets[2]])
    rows = reconcile(conn, dry_run=False)
    assert [row[2] for row in rows] == [
        "wallet.balance",
        "profile.balance",
        "profile.lifetime_earnings",
        "wallet.balance",
    ]
    assert all(row[-1] for row in rows)
    assert balances(conn, wallets[0]) == (Decimal("20.00"),) * 3
    assert balances(conn, wallets[2]) == (Decimal("10.00"),) * 3
    log = conn.execute(
        "SELECT user_id, wallet_id, field, cached_value, ledger_value, actor, at IS NOT NULL"
        " FROM economy.reconcile_log ORDER BY id"
    ).fetchall()
    assert [entry[:5] for entry in log] == [row[:5] for row in rows]
    assert {entry[5] for entry in log} == {conn.info.user}
    assert conn.execute("SELECT count(DISTINCT run_id) FROM economy.reconcile_log").fetchone() == (
        1,
    )
    assert reconcile(conn, dry_run=False) == []
    assert drift(conn) == []


def test_real_run_limited_to_user_ids(conn, wallets):
    conn.execute("UPDATE economy.wallet SET balance = 0")
    rows = reconcile(conn, dry_run=False, user_ids=[3])
    assert {row[0] for row in rows} == {3}
    assert {row[0] for row in drift(conn)} == {1, 2}


def test_max_wallets_bounds_a_run(conn, wallets):
    conn.execute("UPDATE economy.profile SET balance = 0")
    assert {row[0] for row in reconcile(conn, max_wallets=2)} == {1, 2}
    assert {row[0] for row in reconcile(conn, dry_run=False, max_wallets=2)} == {1, 2}
    assert {row[0] for row in drift(conn)} == {3}


def test_ledger_below_overdraft_is_still_reconciled_to_truth(conn, wallets):
    """The ledger is the truth even when a bulk load broke the overdraft rule;
    repairing the cache must not fail."""
    load_without_sync(conn, wallets[0], "-50", kind="fee")
    reconcile(conn, dry_run=False)
    assert balances(conn, wallets[0])[0] == Decimal("-40.00")
    post(conn, wallets[0], "1")  # credits still allowed
    with pytest.raises(errors.CheckViolation):
        post(conn, wallets[0], "-1", kind="fee")


def test_reconcile_refuses_null_dry_run(conn, wallets):
    with pytest.raises(errors.NotNullViolation):
        reconcile(conn, dry_run=None)


def test_reconcile_refuses_negative_max_wallets(conn, wallets):
    with pytest.raises(errors.InvalidParameterValue):
        reconcile(conn, max_wallets=-1)
