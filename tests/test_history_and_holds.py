"""Balances over time (balance_after, balance_at) and holds (hold, capture,
release, expiry; wallet.held), on the package's own tables."""

import io
import threading
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from helpers import open_wallet, post, state
from psycopg import errors

from economy_sync import (
    WalletNotFound,
    balance_at,
    capture_hold,
    expire_holds,
    hold,
    reconcile,
    release_hold,
)
from economy_sync.cli import main as cli


@pytest.fixture
def wallet(conn):
    """A wallet with 100.00 and no overdraft."""
    wallet_id = open_wallet(conn, 1)
    post(conn, wallet_id, "100", kind="prize")
    return wallet_id


def figures(conn, wallet_id):
    return conn.execute(
        "SELECT balance, held FROM economy.wallet WHERE id = %s", [wallet_id]
    ).fetchone()


def balances_after(conn, wallet_id):
    return [
        row[0]
        for row in conn.execute(
            "SELECT balance_after FROM economy.transaction WHERE wallet_id = %s ORDER BY id",
            [wallet_id],
        )
    ]


def drift(conn):
    return conn.execute("SELECT * FROM economy.balance_drift()").fetchall()


# balance_after


def test_balance_after_is_the_running_balance(conn, wallet):
    post(conn, wallet, "-30", kind="purchase")
    conn.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind)"
        " SELECT %s, 5, 'reward' FROM generate_series(1, 3)",
        [wallet],
    )
    with conn.cursor().copy("COPY economy.transaction (wallet_id, amount, kind) FROM STDIN") as cp:
        cp.write_row((wallet, Decimal("1.50"), "refund"))
        cp.write_row((wallet, Decimal("-0.50"), "fee"))
    assert balances_after(conn, wallet) == [
        Decimal(v) for v in ["100", "70", "75", "80", "85", "86.5", "86"]
    ]
    assert figures(conn, wallet)[0] == Decimal("86.00")


def test_concurrent_entries_get_each_balance_exactly_once(conn, connect, wallet):
    conns = [connect() for _ in range(8)]
    start = threading.Barrier(len(conns))

    def credit(c):
        start.wait()
        for _ in range(10):
            post(c, wallet, "1")

    threads = [threading.Thread(target=credit, args=(c,)) for c in conns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = sorted(balances_after(conn, wallet)[1:])
    assert after == [Decimal(100 + n) for n in range(1, 81)]


def test_a_replay_skipped_by_on_conflict_is_not_applied(conn, wallet):
    insert = (
        "INSERT INTO economy.transaction (wallet_id, amount, kind, idempotency_key)"
        " VALUES (%s, -10, 'purchase', 'order-1') ON CONFLICT DO NOTHING"
    )
    conn.execute(insert, [wallet])
    conn.execute(insert, [wallet])
    assert figures(conn, wallet)[0] == Decimal("90.00")
    assert balances_after(conn, wallet) == [Decimal("100.00"), Decimal("90.00")]
    assert drift(conn) == []


def test_a_replay_that_would_overdraw_is_still_a_replay(conn):
    """The replayed debit's amount is taken back before the overdraft check."""
    wallet = open_wallet(conn, 2)
    post(conn, wallet, "10", kind="prize")
    first = post(conn, wallet, "-10", kind="purchase", idempotency_key="k")
    assert post(conn, wallet, "-10", kind="purchase", idempotency_key="k")["id"] == first["id"]
    assert figures(conn, wallet)[0] == Decimal("0.00")


def test_the_app_cannot_write_balance_after(login, wallet):
    app = login("economy_app")
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute(
            "INSERT INTO economy.transaction (wallet_id, amount, kind, balance_after)"
            " VALUES (%s, 1, 'reward', 1000000)",
            [wallet],
        )


# balance_at


def test_balance_at_sums_the_entries_up_to_a_time(conn, wallet):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for day, amount in ((1, 10), (2, -3), (5, 7)):
        conn.execute(  # the superuser may date entries (package roles may not)
            "INSERT INTO economy.transaction (wallet_id, amount, kind, created_at)"
            " VALUES (%s, %s, 'adjustment', %s)",
            [wallet, amount, start + timedelta(days=day)],
        )
    at = [balance_at(conn, wallet, start + timedelta(days=d)) for d in (0, 1, 3, 5)]
    assert at == [Decimal("0.00"), Decimal("10"), Decimal("7"), Decimal("14")]
    assert balance_at(conn, wallet, datetime.now(UTC)) == Decimal("114.00")
    with pytest.raises(WalletNotFound):
        balance_at(conn, 999, start)


def test_balance_at_reads_the_index_only(conn, wallet):
    conn.execute("SET enable_seqscan = off")  # a tiny table: ask what the big one gets
    conn.execute("VACUUM economy.transaction")
    plan = "\n".join(
        row[0]
        for row in conn.execute(
            "EXPLAIN SELECT coalesce(sum(t.amount), 0.00) FROM economy.transaction t"
            " WHERE t.wallet_id = %s AND t.created_at <= now()",
            [wallet],
        )
    )
    assert "Index Only Scan using transaction_wallet_created_at" in plan


# holds


def test_a_hold_sets_money_aside(conn, wallet):
    placed = hold(conn, wallet, Decimal("60"))
    assert (placed.status, placed.amount) == ("held", Decimal("60.00"))
    assert figures(conn, wallet) == (Decimal("100.00"), Decimal("60.00"))
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="overdraft"):
        post(conn, wallet, "-41", kind="purchase")
    with pytest.raises(errors.CheckViolation, match="cannot hold"):
        hold(conn, wallet, Decimal("41"))
    assert state(conn) == before
    post(conn, wallet, "-40", kind="purchase")  # what is available


def test_capture_posts_the_debit_and_releases_the_rest(conn, wallet):
    placed = hold(conn, wallet, Decimal("60"))
    entry = capture_hold(conn, placed.id, Decimal("25"), memo="skin")
    assert (entry.amount, entry.kind, entry.balance_after) == (
        Decimal("-25.00"),
        "purchase",
        Decimal("75.00"),
    )
    assert figures(conn, wallet) == (Decimal("75.00"), Decimal("0.00"))
    row = conn.execute(
        "SELECT status, captured_entry_id FROM economy.wallet_hold WHERE id = %s", [placed.id]
    ).fetchone()
    assert row == ("captured", entry.id)


def test_capture_of_all_of_it_spends_the_held_amount(conn, wallet):
    entry = capture_hold(conn, hold(conn, wallet, Decimal("100")).id)
    assert entry.amount == Decimal("-100.00")
    assert figures(conn, wallet) == (Decimal("0.00"), Decimal("0.00"))


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("more_than_held", errors.CheckViolation),
        ("captured_twice", errors.CheckViolation),
        ("released", errors.CheckViolation),
        ("past_expiry", errors.CheckViolation),
        ("unknown", errors.NoDataFound),
        ("three_decimals", errors.CheckViolation),
    ],
)
def test_refused_captures_write_nothing(conn, wallet, case, error):
    expires = datetime.now(UTC) - timedelta(seconds=1) if case == "past_expiry" else None
    placed = hold(conn, wallet, Decimal("50"), expires_at=expires)
    amount = {"more_than_held": Decimal("50.01"), "three_decimals": Decimal("1.005")}.get(case)
    if case == "captured_twice":
        capture_hold(conn, placed.id)
    if case == "released":
        release_hold(conn, placed.id)
    before = state(conn)
    held_before = figures(conn, wallet)
    with pytest.raises(error):
        capture_hold(conn, 999 if case == "unknown" else placed.id, amount)
    assert state(conn) == before
    assert figures(conn, wallet) == held_before


def test_release_and_expiry(conn, wallet):
    kept = hold(conn, wallet, Decimal("10"), expires_at=datetime.now(UTC) + timedelta(hours=1))
    due = hold(conn, wallet, Decimal("20"), expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert release_hold(conn, kept.id).status == "released"
    with pytest.raises(errors.CheckViolation):
        release_hold(conn, kept.id)
    assert figures(conn, wallet)[1] == Decimal("20.00")  # past expiry, still counted
    assert expire_holds(conn) == 1
    assert figures(conn, wallet)[1] == Decimal("0.00")
    status = conn.execute("SELECT status FROM economy.wallet_hold WHERE id = %s", [due.id])
    assert status.fetchone() == ("expired",)


def test_hold_idempotency_key(conn, wallet):
    first = hold(conn, wallet, Decimal("10"), idempotency_key="cart-1")
    assert hold(conn, wallet, Decimal("10"), idempotency_key="cart-1").id == first.id
    with pytest.raises(errors.UniqueViolation):
        hold(conn, wallet, Decimal("11"), idempotency_key="cart-1")
    assert figures(conn, wallet)[1] == Decimal("10.00")


@pytest.mark.parametrize("amount", ["0", "-1", "NaN", "Infinity", "1.005", None])
def test_a_bad_hold_amount_is_refused(conn, wallet, amount):
    before = state(conn)
    with pytest.raises((errors.CheckViolation, errors.NotNullViolation)):
        hold(conn, wallet, None if amount is None else Decimal(amount))
    assert state(conn) == before


def test_the_app_uses_holds_only_through_the_functions(login, wallet):
    app = login("economy_app")
    placed = hold(app, wallet, Decimal("5"))
    capture_hold(app, placed.id)
    for statement in (
        "INSERT INTO economy.wallet_hold (wallet_id, amount) VALUES (1, 1)",
        "UPDATE economy.wallet_hold SET status = 'released'",
        "UPDATE economy.wallet SET held = 0",
    ):
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute(statement)


def test_held_drift_is_found_and_repaired(conn, wallet):
    hold(conn, wallet, Decimal("30"))
    conn.execute("UPDATE economy.wallet SET held = 0")
    assert [(row[2], row[3], row[4]) for row in drift(conn)] == [
        ("wallet.held", Decimal("0.00"), Decimal("30.00"))
    ]
    assert reconcile(conn, dry_run=False).balance_fixes == 1
    assert drift(conn) == []


def test_racing_holds_debits_captures_and_releases_never_overspend(conn, connect, wallet):
    conns = [connect() for _ in range(6)]
    start = threading.Barrier(len(conns))
    refused = []

    def spend(c, number):
        start.wait()
        for i in range(15):
            try:
                if (number + i) % 3 == 0:
                    post(c, wallet, "-7", kind="purchase")
                else:
                    placed = hold(c, wallet, Decimal("9"))
                    if (number + i) % 3 == 1:
                        capture_hold(c, placed.id, Decimal("4"))
                    else:
                        release_hold(c, placed.id)
            except errors.CheckViolation:
                refused.append(number)

    threads = [threading.Thread(target=spend, args=(c, n)) for n, c in enumerate(conns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    balance, held = figures(conn, wallet)
    assert held == Decimal("0.00")
    assert balance >= 0
    assert refused  # the wallet ran dry: some were refused
    assert drift(conn) == []


def test_cli_holds_expire_and_doctor(conn, dsn, wallet):
    hold(conn, wallet, Decimal("5"), expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with redirect_stdout(io.StringIO()) as out:
        assert cli(["--dsn", dsn, "doctor"]) == 1
    assert "past their expiry" in out.getvalue()
    with redirect_stdout(io.StringIO()) as out:
        assert cli(["--dsn", dsn, "holds", "expire"]) == 0
    assert "Expired holds: 1" in out.getvalue()
