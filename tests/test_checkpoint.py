"""The ledger checkpoint: per-wallet totals up to a safe ledger id, so that
drift checks sum only newer entries. It must never change what they find."""

import threading
from decimal import Decimal

import psycopg
import pytest
from helpers import drift, open_wallet, post
from psycopg import errors

from economy_sync import advance_checkpoint

RAW_TOTALS = """
    SELECT t.wallet_id, sum(t.amount),
        coalesce(sum(t.amount) FILTER (WHERE k.is_earning), 0)
    FROM economy.transaction t JOIN economy.transaction_kind k USING (kind)
    GROUP BY t.wallet_id ORDER BY t.wallet_id
"""


def totals(conn):
    return conn.execute("SELECT * FROM economy.ledger_totals ORDER BY wallet_id").fetchall()


def horizon(conn):
    return conn.execute(
        "SELECT checkpointed_up_to, safe_up_to FROM economy.ledger_horizon"
    ).fetchone()


@pytest.fixture
def wallets(conn):
    ids = [open_wallet(conn, user) for user in (1, 2, 3)]
    for wallet_id in ids:
        post(conn, wallet_id, "10", kind="prize")
        post(conn, wallet_id, "2.5", kind="refund")
    return ids


def test_totals_equal_the_raw_sums_before_and_after_advancing(conn, wallets):
    assert totals(conn) == conn.execute(RAW_TOTALS).fetchall()
    assert advance_checkpoint(conn) == 6
    assert horizon(conn) == (6, 6)
    post(conn, wallets[0], "-4", kind="fee")
    post(conn, wallets[1], "1", kind="reward")
    conn.execute("SELECT economy.transfer(%s, %s, 2)", wallets[1:])
    assert totals(conn) == conn.execute(RAW_TOTALS).fetchall()
    assert advance_checkpoint(conn) == 10
    assert totals(conn) == conn.execute(RAW_TOTALS).fetchall()
    assert drift(conn) == []


def test_advancing_twice_adds_nothing(conn, wallets):
    advance_checkpoint(conn)
    before = conn.execute("SELECT * FROM economy.ledger_checkpoint ORDER BY 1").fetchall()
    advance_checkpoint(conn)
    assert conn.execute("SELECT * FROM economy.ledger_checkpoint ORDER BY 1").fetchall() == before


def test_drift_found_and_repaired_across_the_checkpoint(conn, wallets):
    advance_checkpoint(conn)
    conn.execute("UPDATE economy.wallet SET balance = 0 WHERE id = %s", [wallets[2]])
    assert drift(conn) == [(3, wallets[2], "wallet.balance", Decimal("0.00"), Decimal("12.50"))]
    conn.execute("SELECT * FROM economy.reconcile_economy(dry_run => false)")
    assert drift(conn) == []


def test_an_insert_in_flight_holds_the_horizon_back(conn, connect, wallets):
    writer = connect(autocommit=False)
    post(writer, wallets[0], "7")  # not committed yet
    assert advance_checkpoint(conn) is None  # mark_ledger_horizon waits 2 s at most
    assert horizon(conn) == (0, 0)
    writer.commit()
    assert advance_checkpoint(conn) == 7
    assert totals(conn) == conn.execute(RAW_TOTALS).fetchall()


def test_an_entry_committed_after_the_horizon_is_still_counted(conn, connect, wallets):
    """Ids are handed out before commit: an entry with a smaller id than the
    horizon must not be missed because it committed later."""
    marked = threading.Event()
    writer = connect(autocommit=False)
    post(writer, wallets[0], "7")  # holds id 7, uncommitted

    def mark():
        with psycopg.connect(conn.info.dsn, autocommit=True) as c:
            c.execute("SELECT economy.mark_ledger_horizon()")  # waits for the writer
        marked.set()

    marker = threading.Thread(target=mark)
    marker.start()
    assert not marked.wait(0.5)  # still waiting for the in-flight insert
    writer.commit()
    marker.join()
    conn.execute("SELECT economy.advance_ledger_checkpoint()")
    assert horizon(conn) == (7, 7)
    assert totals(conn) == conn.execute(RAW_TOTALS).fetchall()


def test_mark_refuses_repeatable_read(connect, wallets):
    c = connect(autocommit=False)
    c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    with pytest.raises(errors.InvalidTransactionState):
        c.execute("SELECT economy.mark_ledger_horizon()")


def test_mark_refuses_a_caching_id_sequence(conn, wallets):
    conn.execute("ALTER TABLE economy.transaction ALTER COLUMN id SET CACHE 20")
    with pytest.raises(errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT economy.mark_ledger_horizon()")


def test_ledger_ids_cannot_be_chosen(conn, wallets):
    with pytest.raises(errors.GeneratedAlways):
        conn.execute(
            "INSERT INTO economy.transaction (id, wallet_id, amount, kind)"
            " VALUES (1, %s, 1, 'fee')",
            [wallets[0]],
        )


def test_real_reconcile_advances_the_checkpoint_and_dry_run_does_not(conn, wallets):
    from economy_sync import reconcile

    reconcile(conn, dry_run=True)
    assert horizon(conn) == (0, 0)
    reconcile(conn, dry_run=False)
    assert horizon(conn) == (6, 6)
