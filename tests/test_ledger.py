"""The ledger and its cached balances: the SQL functions of the contract, and
sync for every way of inserting."""

from decimal import Decimal

import psycopg
import pytest
from helpers import balances, drift, open_wallet, post, state


def test_open_wallet_creates_profile_and_wallet_with_zero_balances(conn):
    wallet_id = open_wallet(conn, 42, overdraft_limit="25.50")
    row = conn.execute(
        "SELECT w.user_id, w.balance, w.overdraft_limit, w.created_at IS NOT NULL,"
        " p.balance, p.lifetime_earnings FROM economy.wallet w"
        " JOIN economy.profile p USING (user_id) WHERE w.id = %s",
        [wallet_id],
    ).fetchone()
    assert row == (42, Decimal("0.00"), Decimal("25.50"), True, Decimal("0.00"), Decimal("0.00"))


def test_open_wallet_twice_returns_the_same_wallet(conn):
    assert open_wallet(conn, 7) == open_wallet(conn, 7)
    assert conn.execute("SELECT count(*) FROM economy.wallet").fetchone()[0] == 1


def test_open_wallet_for_existing_profile_keeps_it(conn):
    conn.execute("INSERT INTO economy.profile (user_id) VALUES (8)")
    wallet_id = open_wallet(conn, 8)
    assert conn.execute(
        "SELECT user_id FROM economy.wallet WHERE id = %s", [wallet_id]
    ).fetchone() == (8,)


def test_open_wallet_default_overdraft_is_zero(conn):
    wallet_id = conn.execute("SELECT economy.open_wallet(user_id => 9)").fetchone()[0]
    limit = conn.execute("SELECT overdraft_limit FROM economy.wallet WHERE id = %s", [wallet_id])
    assert limit.fetchone() == (Decimal("0.00"),)


def test_transaction_kinds_are_seeded(conn):
    kinds = dict(conn.execute("SELECT kind, is_earning FROM economy.transaction_kind").fetchall())
    assert kinds == {
        "prize": True,
        "reward": True,
        "purchase": False,
        "fee": False,
        "refund": False,
        "transfer": False,
        "adjustment": False,
    }


def test_post_transaction_updates_every_cache(conn):
    wallet_id = open_wallet(conn, 1)
    entry = post(conn, wallet_id, "100.25", kind="prize", memo="cup final")
    assert entry["wallet_id"] == wallet_id
    assert entry["amount"] == Decimal("100.25")
    assert entry["kind"] == "prize"
    assert entry["memo"] == "cup final"
    assert entry["created_at"] is not None
    post(conn, wallet_id, "-30", kind="purchase")
    assert balances(conn, wallet_id) == (Decimal("70.25"), Decimal("70.25"), Decimal("100.25"))


def test_non_earning_credit_does_not_count_as_earnings(conn):
    wallet_id = open_wallet(conn, 1)
    post(conn, wallet_id, "10", kind="refund")
    assert balances(conn, wallet_id) == (Decimal("10.00"), Decimal("10.00"), Decimal("0.00"))


def test_amount_is_stored_with_two_decimals(conn):
    wallet_id = open_wallet(conn, 1)
    assert str(post(conn, wallet_id, "5")["amount"]) == "5.00"
    assert str(post(conn, wallet_id, "1.100")["amount"]) == "1.10"


def test_plain_insert_is_synced(conn):
    wallet_id = open_wallet(conn, 1)
    conn.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind) VALUES (%s, 12.5, 'reward')",
        [wallet_id],
    )
    assert balances(conn, wallet_id) == (Decimal("12.50"),) * 3


def test_multi_row_insert_select_is_synced(conn):
    wallets = [open_wallet(conn, user) for user in (1, 2, 3)]
    conn.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind)"
        " SELECT w, 1.25, k FROM unnest(%s::bigint[]) w,"
        " unnest(ARRAY['prize', 'refund', 'reward']) k, generate_series(1, 10)",
        [wallets],
    )
    for wallet_id in wallets:
        assert balances(conn, wallet_id) == (Decimal("37.50"), Decimal("37.50"), Decimal("25.00"))
    assert drift(conn) == []


def test_copy_is_synced(conn):
    wallet_id = open_wallet(conn, 1)
    with conn.cursor().copy(
        "COPY economy.transaction (wallet_id, amount, kind) FROM STDIN"
    ) as copy:
        for _ in range(100):
            copy.write_row((wallet_id, Decimal("0.01"), "prize"))
    assert balances(conn, wallet_id) == (Decimal("1.00"),) * 3


def test_insert_on_conflict_do_nothing_applies_only_inserted_rows(conn):
    wallet_id = open_wallet(conn, 1)
    insert = (
        "INSERT INTO economy.transaction (wallet_id, amount, kind, idempotency_key)"
        " VALUES (%s, 5, 'reward', 'once') ON CONFLICT DO NOTHING"
    )
    conn.execute(insert, [wallet_id])
    conn.execute(insert, [wallet_id])
    assert balances(conn, wallet_id) == (Decimal("5.00"),) * 3


def test_rollback_leaves_no_trace(connect):
    conn = connect(autocommit=False)
    wallet_id = open_wallet(conn, 1)
    conn.commit()
    before = state(conn)
    post(conn, wallet_id, "50")
    assert balances(conn, wallet_id)[0] == Decimal("50.00")
    conn.rollback()
    assert state(conn) == before


def test_same_idempotency_key_and_payload_returns_existing_entry(conn):
    wallet_id = open_wallet(conn, 1)
    first = post(conn, wallet_id, "10", idempotency_key="order-1", memo="m")
    before = state(conn)
    again = post(conn, wallet_id, "10.00", idempotency_key="order-1", memo="m")
    assert again == first
    assert state(conn) == before


def test_same_idempotency_key_on_other_wallet_is_a_new_entry(conn):
    first, second = open_wallet(conn, 1), open_wallet(conn, 2)
    post(conn, first, "10", idempotency_key="k")
    post(conn, second, "10", idempotency_key="k")
    assert balances(conn, second)[0] == Decimal("10.00")


@pytest.mark.parametrize(
    "changed", [{"amount": "11"}, {"kind": "prize"}, {"memo": "other"}], ids=lambda c: next(iter(c))
)
def test_same_idempotency_key_with_different_payload_is_refused(conn, changed):
    wallet_id = open_wallet(conn, 1)
    payload = {"amount": "10", "kind": "reward", "memo": None}
    post(conn, wallet_id, idempotency_key="k", **payload)
    before = state(conn)
    with pytest.raises(psycopg.errors.UniqueViolation, match="idempotency key k"):
        post(conn, wallet_id, idempotency_key="k", **{**payload, **changed})
    assert state(conn) == before


def test_transfer_moves_money_in_two_transfer_entries(conn):
    source, target = open_wallet(conn, 1), open_wallet(conn, 2)
    post(conn, source, "100", kind="prize")
    entries = conn.execute(
        "SELECT wallet_id, amount, kind, memo FROM economy.transfer(%s, %s, 30.5, memo => 'gift')",
        [source, target],
    ).fetchall()
    assert entries == [
        (source, Decimal("-30.50"), "transfer", "gift"),
        (target, Decimal("30.50"), "transfer", "gift"),
    ]
    assert balances(conn, source) == (Decimal("69.50"), Decimal("69.50"), Decimal("100.00"))
    assert balances(conn, target) == (Decimal("30.50"), Decimal("30.50"), Decimal("0.00"))


def test_transfer_with_same_key_is_idempotent(conn):
    source, target = open_wallet(conn, 1), open_wallet(conn, 2)
    post(conn, source, "100")
    call = "SELECT id FROM economy.transfer(%s, %s, 30, idempotency_key => 'tx-9')"
    first = conn.execute(call, [source, target]).fetchall()
    before = state(conn)
    assert conn.execute(call, [source, target]).fetchall() == first
    assert state(conn) == before


def test_transfer_with_same_key_and_other_amount_is_refused(conn):
    source, target = open_wallet(conn, 1), open_wallet(conn, 2)
    post(conn, source, "100")
    conn.execute("SELECT economy.transfer(%s, %s, 30, idempotency_key => 'tx')", [source, target])
    before = state(conn)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "SELECT economy.transfer(%s, %s, 31, idempotency_key => 'tx')", [source, target]
        )
    assert state(conn) == before


def test_transfer_within_overdraft_limit_is_allowed(conn):
    source, target = open_wallet(conn, 1, overdraft_limit="50"), open_wallet(conn, 2)
    conn.execute("SELECT economy.transfer(%s, %s, 50)", [source, target])
    assert balances(conn, source)[0] == Decimal("-50.00")


def test_reverse_transaction_appends_the_negation(conn):
    wallet_id = open_wallet(conn, 1)
    original = post(conn, wallet_id, "40", kind="prize")
    reversal = conn.execute(
        "SELECT wallet_id, amount, kind, reverses_id, memo"
        " FROM economy.reverse_transaction(%s, memo => 'chargeback')",
        [original["id"]],
    ).fetchone()
    assert reversal == (wallet_id, Decimal("-40.00"), "prize", original["id"], "chargeback")
    assert balances(conn, wallet_id) == (Decimal("0.00"),) * 3


def test_reversal_of_a_debit_credits_back(conn):
    wallet_id = open_wallet(conn, 1)
    post(conn, wallet_id, "40")
    debit = post(conn, wallet_id, "-15", kind="fee")
    conn.execute("SELECT economy.reverse_transaction(%s)", [debit["id"]])
    assert balances(conn, wallet_id)[0] == Decimal("40.00")


def test_plain_insert_of_a_valid_reversal_is_accepted(conn):
    wallet_id = open_wallet(conn, 1)
    original = post(conn, wallet_id, "40")
    conn.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind, reverses_id)"
        " VALUES (%s, -40, 'reward', %s)",
        [wallet_id, original["id"]],
    )
    assert balances(conn, wallet_id)[0] == Decimal("0.00")


def test_ledger_view_totals_match_caches(conn):
    wallet_id = open_wallet(conn, 1)
    post(conn, wallet_id, "3", kind="prize")
    post(conn, wallet_id, "4", kind="refund")
    totals = conn.execute(
        "SELECT balance, lifetime_earnings FROM economy.ledger_totals WHERE wallet_id = %s",
        [wallet_id],
    ).fetchone()
    assert totals == (Decimal("7.00"), Decimal("3.00"))
