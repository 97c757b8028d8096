"""Multi-row writes applied set-based through economy.transaction_batch:
INSERT … SELECT, multi-row VALUES and COPY; the same rules as single entries,
nothing written when a row is refused; raced by several connections."""

import random
import threading
from decimal import Decimal

import pytest
from helpers import balances, chained, drift, open_wallet, post, state
from psycopg import errors

from economy_sync import post_batch, set_hot, wallet_balance

BATCH = "INSERT INTO economy.transaction_batch (wallet_id, amount, kind) VALUES "


@pytest.fixture
def wallets(conn):
    """Wallets 1..3 of users 1..3, wallet 1 with 100.00 and an overdraft limit of 10."""
    ids = [open_wallet(conn, 1, "10"), open_wallet(conn, 2), open_wallet(conn, 3)]
    post(conn, ids[0], "100", kind="prize")
    return ids


def entries(conn):
    return conn.execute(
        "SELECT wallet_id, amount, kind, balance_after FROM economy.transaction ORDER BY id"
    ).fetchall()


def staged(conn):
    return conn.execute("SELECT count(*) FROM economy.transaction_batch").fetchone()[0]


def test_rows_land_in_the_ledger_in_order_with_their_running_balances(conn, wallets):
    conn.execute(
        BATCH + "(%s, -30, 'purchase'), (%s, 5, 'prize'), (%s, 2.5, 'refund'), (%s, 1, 'reward')",
        [wallets[0], wallets[1], wallets[0], wallets[1]],
    )
    assert entries(conn)[1:] == [
        (wallets[0], Decimal("-30.00"), "purchase", Decimal("70.00")),
        (wallets[1], Decimal("5.00"), "prize", Decimal("5.00")),
        (wallets[0], Decimal("2.50"), "refund", Decimal("72.50")),
        (wallets[1], Decimal("1.00"), "reward", Decimal("6.00")),
    ]
    assert balances(conn, wallets[0]) == (Decimal("72.50"), Decimal("72.50"), Decimal("100.00"))
    assert balances(conn, wallets[1]) == (Decimal("6.00"), Decimal("6.00"), Decimal("6.00"))
    assert staged(conn) == 0
    assert drift(conn) == []


def test_copy_and_insert_select(conn, wallets):
    with conn.cursor().copy(
        "COPY economy.transaction_batch (wallet_id, amount, kind, memo) FROM STDIN"
    ) as cp:
        for n in range(50):
            cp.write_row((wallets[n % 3], Decimal("1.25"), "reward", f"row {n}"))
    conn.execute(
        "INSERT INTO economy.transaction_batch (wallet_id, amount, kind)"
        " SELECT %s, -1, 'fee' FROM generate_series(1, 20)",
        [wallets[0]],
    )
    assert balances(conn, wallets[0])[0] == Decimal("100") + 17 * Decimal("1.25") - 20
    assert conn.execute(
        "SELECT count(*) FROM economy.transaction WHERE memo LIKE 'row %'"
    ).fetchone() == (50,)
    assert staged(conn) == 0
    assert drift(conn) == []


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        # the debit is refused at its place in the order: a later credit does not save it
        ("(%(w1)s, -115, 'purchase'), (%(w1)s, 50, 'prize')", errors.CheckViolation),
        ("(%(w2)s, 5, 'prize'), (404, 1, 'prize')", errors.ForeignKeyViolation),
        ("(%(w2)s, 5, 'nope')", errors.ForeignKeyViolation),
        ("(%(w2)s, 0.005, 'prize')", errors.CheckViolation),
        ("(%(w2)s, 'NaN', 'prize')", errors.CheckViolation),
        ("(%(w2)s, 0, 'prize')", errors.CheckViolation),
        ("(%(w2)s, NULL, 'prize')", errors.NotNullViolation),
    ],
)
def test_a_refused_row_leaves_nothing_written(conn, wallets, rows, error):
    before = state(conn)
    with pytest.raises(error):
        conn.execute(BATCH + rows, {"w1": wallets[0], "w2": wallets[1]})
    assert state(conn) == before
    assert staged(conn) == 0


def test_a_reused_idempotency_key_is_refused(conn, wallets):
    post(conn, wallets[1], "5", idempotency_key="k")
    before = state(conn)
    for keys in (["k"], ["n", "n"]):
        with pytest.raises(errors.UniqueViolation):
            conn.execute(
                "INSERT INTO economy.transaction_batch (wallet_id, amount, kind, idempotency_key)"
                " SELECT %s, 1, 'prize', k FROM unnest(%s::text[]) k",
                [wallets[1], keys],
            )
    assert state(conn) == before


def test_the_app_role_may_write_batches_but_not_choose_positions(login, wallets):
    app = login("economy_app")
    app.execute(BATCH + "(%s, 3, 'reward')", [wallets[2]])
    assert balances(app, wallets[2])[0] == Decimal("3.00")
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute(
            "INSERT INTO economy.transaction_batch (position, wallet_id, amount, kind)"
            " OVERRIDING SYSTEM VALUE VALUES (1, %s, 1, 'prize')",
            [wallets[2]],
        )
    for statement in (
        "DELETE FROM economy.transaction_batch",
        "UPDATE economy.transaction_batch SET amount = 1",
    ):
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute(statement)


def test_a_hot_wallet_in_a_batch_is_folded_for_its_debit_and_its_credits_parked(conn, wallets):
    set_hot(conn, wallets[0])
    post(conn, wallets[0], "20")  # parked
    conn.execute(
        BATCH + "(%s, -125, 'purchase'), (%s, 5, 'prize'), (%s, 3, 'refund')",
        [wallets[0], wallets[1], wallets[0]],
    )  # the debit needs the parked 20; the later credit counts, as the debit locked the wallet
    assert [(w, after) for w, _, _, after in entries(conn)[-3:]] == [
        (wallets[0], Decimal("-5.00")),
        (wallets[1], Decimal("5.00")),
        (wallets[0], Decimal("-2.00")),
    ]
    assert balances(conn, wallets[0])[0] == Decimal("-2.00")
    assert wallet_balance(conn, wallets[0]) == Decimal("-2.00")
    assert drift(conn) == []


def test_racing_batches_single_entries_and_transfers(conn, connect):
    """Batches over shared wallets in random order, single entries and transfers
    from several connections: no deadlock, nothing lost or doubled, and each
    wallet's balance_after values are its running sum, each exactly once."""
    ids = [open_wallet(conn, user, "1000") for user in range(1, 11)]
    failures: list[BaseException] = []
    start = threading.Barrier(6)

    def batches(c):
        for _ in range(15):
            rows = [(random.choice(ids), random.choice([-3, 1, 2, 5])) for _ in range(40)]
            with c.cursor().copy(
                "COPY economy.transaction_batch (wallet_id, amount, kind) FROM STDIN"
            ) as cp:
                for wallet_id, amount in rows:
                    cp.write_row((wallet_id, amount, "adjustment"))

    def singles(c):
        for _ in range(100):
            post(c, random.choice(ids), random.choice(["-2", "3"]), kind="fee")

    def transfers(c):
        for _ in range(60):
            a, b = random.sample(ids, 2)
            c.execute("SELECT economy.transfer(%s, %s, 1)", [a, b])

    def run(work):
        c = connect()
        try:
            start.wait()
            work(c)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [
        threading.Thread(target=run, args=(work,))
        for work in (batches, batches, batches, singles, singles, transfers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert drift(conn) == []
    assert all(chained(conn, wallet_id) for wallet_id in ids)


def test_post_batch_from_python(conn, wallets):
    post_batch(conn, [(wallets[1], Decimal("4.50"), "prize"), (wallets[1], -1, "fee", "k-1", "m")])
    assert entries(conn)[1:] == [
        (wallets[1], Decimal("4.50"), "prize", Decimal("4.50")),
        (wallets[1], Decimal("-1.00"), "fee", Decimal("3.50")),
    ]
    with pytest.raises(errors.CheckViolation):
        post_batch(conn, [(wallets[1], -10, "fee")])
    assert balances(conn, wallets[1])[0] == Decimal("3.50")
