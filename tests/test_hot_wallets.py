"""Hot wallets: credits parked instead of queueing on the wallet's row, exact
figures through wallet_balance, debits still checked against the exact
balance, folds by debits, holds, fold_hot_wallets, set_hot(false) and a real
reconcile; raced by several connections."""

import io
import random
import threading
from contextlib import redirect_stdout, suppress
from decimal import Decimal

import pytest
from helpers import balances, drift, open_wallet, post
from psycopg import errors

from economy_sync import (
    WalletNotFound,
    fold_hot_wallets,
    hold,
    reconcile,
    set_hot,
    wallet_balance,
)
from economy_sync.cli import main as cli
from economy_sync.metrics import collect


@pytest.fixture
def treasury(conn):
    """A hot wallet (user 1) with 100.00 folded, and a normal wallet (user 2) with 100.00."""
    hot_id, normal_id = open_wallet(conn, 1), open_wallet(conn, 2)
    post(conn, hot_id, "100", kind="prize")
    post(conn, normal_id, "100", kind="prize")
    set_hot(conn, hot_id)
    return hot_id


def parked(conn, wallet_id):
    return conn.execute(
        "SELECT count(*), coalesce(sum(amount), 0) FROM economy.hot_credit WHERE wallet_id = %s",
        [wallet_id],
    ).fetchone()


def ledger_sum(conn, wallet_id):
    return conn.execute(
        "SELECT coalesce(sum(amount), 0) FROM economy.transaction WHERE wallet_id = %s",
        [wallet_id],
    ).fetchone()[0]


def assert_exact(conn, wallet_id):
    """No drift; the exact balance is the ledger's; folded, the caches are too."""
    assert drift(conn) == []
    assert wallet_balance(conn, wallet_id) == ledger_sum(conn, wallet_id)
    fold_hot_wallets(conn)
    assert parked(conn, wallet_id) == (0, 0)
    assert balances(conn, wallet_id)[:2] == (ledger_sum(conn, wallet_id),) * 2


def test_a_credit_is_parked_and_the_exact_balance_counts_it(conn, treasury):
    entry = post(conn, treasury, "5", kind="reward")
    assert entry["balance_after"] is None
    assert balances(conn, treasury) == (Decimal("100.00"), Decimal("100.00"), Decimal("100.00"))
    assert parked(conn, treasury) == (1, Decimal("5.00"))
    assert wallet_balance(conn, treasury) == Decimal("105.00")
    assert drift(conn) == []
    assert fold_hot_wallets(conn) == 1
    assert balances(conn, treasury) == (Decimal("105.00"), Decimal("105.00"), Decimal("105.00"))
    assert parked(conn, treasury) == (0, 0)
    assert fold_hot_wallets(conn) == 0


def test_credits_do_not_wait_for_each_others_commit(connect, treasury):
    first, second = connect(autocommit=False), connect()
    post(first, treasury, "1")  # uncommitted: holds whatever a credit holds
    second.execute("SET lock_timeout = '1s'")
    post(second, treasury, "2")  # would time out if it queued behind the first
    first.commit()
    assert wallet_balance(second, treasury) == Decimal("103.00")


def test_on_a_normal_wallet_the_same_credits_queue(connect, conn, treasury):
    normal = open_wallet(conn, 2)
    first, second = connect(autocommit=False), connect()
    post(first, normal, "1")
    second.execute("SET lock_timeout = '200ms'")
    with pytest.raises(errors.LockNotAvailable):
        post(second, normal, "2")
    first.rollback()


def test_a_debit_never_counts_uncommitted_credits(connect, conn, treasury):
    crediting = connect(autocommit=False)
    post(crediting, treasury, "50")
    with pytest.raises(errors.CheckViolation, match="overdraft"):
        post(conn, treasury, "-120", kind="purchase")
    crediting.commit()
    entry = post(conn, treasury, "-120", kind="purchase")
    assert entry["balance_after"] == Decimal("30.00")  # folded under the debit's lock
    assert parked(conn, treasury) == (0, 0)
    assert balances(conn, treasury) == (Decimal("30.00"), Decimal("30.00"), Decimal("150.00"))


def test_a_replayed_key_parks_nothing(conn, treasury):
    post(conn, treasury, "5", idempotency_key="fee-1")
    post(conn, treasury, "5", idempotency_key="fee-1")
    conn.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind, idempotency_key)"
        " VALUES (%s, 5, 'reward', 'fee-1') ON CONFLICT DO NOTHING",
        [treasury],
    )
    with pytest.raises(errors.UniqueViolation):
        conn.execute(
            "INSERT INTO economy.transaction (wallet_id, amount, kind, idempotency_key)"
            " VALUES (%s, 5, 'reward', 'fee-1')",
            [treasury],
        )
    assert parked(conn, treasury) == (1, Decimal("5.00"))
    assert_exact(conn, treasury)


def test_multi_row_statements_copy_transfers_and_reversals(conn, treasury):
    normal = open_wallet(conn, 2)
    conn.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind)"
        " SELECT %s, 1, 'fee' FROM generate_series(1, 10)",
        [treasury],
    )
    with conn.cursor().copy("COPY economy.transaction (wallet_id, amount, kind) FROM STDIN") as cp:
        cp.write_row((treasury, Decimal("2.50"), "fee"))
    credit_leg = conn.execute(
        "SELECT id FROM economy.transfer(%s, %s, 7) WHERE wallet_id = %s",
        [normal, treasury, treasury],
    ).fetchone()[0]
    assert parked(conn, treasury) == (12, Decimal("19.50"))
    # reversing the parked credit leg is a debit of the hot wallet: it folds
    conn.execute("SELECT economy.reverse_transaction(%s)", [credit_leg])
    assert parked(conn, treasury) == (0, 0)
    assert balances(conn, treasury)[0] == Decimal("112.50")
    assert balances(conn, normal)[0] == Decimal("100.00")
    assert_exact(conn, treasury)


def test_a_hold_counts_the_parked_credits(conn, treasury):
    post(conn, treasury, "50")
    placed = hold(conn, treasury, Decimal("150"))
    assert placed.amount == Decimal("150.00")
    with pytest.raises(errors.CheckViolation):
        hold(conn, treasury, Decimal("0.01"))
    assert conn.execute(
        "SELECT balance, held FROM economy.wallet WHERE id = %s", [treasury]
    ).fetchone() == (Decimal("150.00"), Decimal("150.00"))


def test_drift_shows_the_exact_figure_and_a_real_reconcile_folds_and_repairs(conn, treasury):
    post(conn, treasury, "5", kind="prize")
    conn.execute(
        "UPDATE economy.profile SET lifetime_earnings = lifetime_earnings + 1 WHERE user_id = 1"
    )
    rows = drift(conn)
    assert rows == [
        (1, treasury, "profile.lifetime_earnings", Decimal("106.00"), Decimal("105.00"))
    ]
    summary = reconcile(conn, dry_run=False)
    assert summary.earnings_fixes == 1
    logged = conn.execute("SELECT field, cached_value, ledger_value FROM economy.reconcile_log")
    assert logged.fetchall() == [
        ("profile.lifetime_earnings", Decimal("106.00"), Decimal("105.00"))
    ]
    assert parked(conn, treasury) == (0, 0)  # folded by the real run
    assert balances(conn, treasury) == (Decimal("105.00"), Decimal("105.00"), Decimal("105.00"))
    assert reconcile(conn, dry_run=False).drift_found == 0


def test_set_hot_false_waits_for_credits_in_flight_and_folds_them(connect, conn, treasury):
    crediting = connect(autocommit=False)
    post(crediting, treasury, "5")
    operator = connect()
    operator.execute("SET lock_timeout = '200ms'")
    with pytest.raises(errors.LockNotAvailable):
        set_hot(operator, treasury, False)
    crediting.commit()
    set_hot(operator, treasury, False)
    assert parked(conn, treasury) == (0, 0)
    assert balances(conn, treasury)[0] == Decimal("105.00")
    assert post(conn, treasury, "1")["balance_after"] == Decimal("106.00")  # normal again


def test_unknown_wallets_and_bad_arguments(conn):
    with pytest.raises(WalletNotFound):
        set_hot(conn, 404)
    with pytest.raises(WalletNotFound):
        wallet_balance(conn, 404)
    assert conn.execute("SELECT economy.wallet_balance(404)").fetchone() == (None,)
    wallet_id = open_wallet(conn, 1)
    with pytest.raises(errors.NotNullViolation):
        conn.execute("SELECT economy.set_hot(%s, NULL)", [wallet_id])


def test_roles(login, conn, treasury):
    app = login("economy_app")
    post(app, treasury, "5")
    assert wallet_balance(app, treasury) == Decimal("105.00")
    for call in ("SELECT economy.set_hot(%s, false)", "SELECT economy.fold_hot_wallets()"):
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute(call, [treasury] if "%s" in call else [])
    for forged in (
        "INSERT INTO economy.hot_credit VALUES (%s, 1000, 0)",
        "DELETE FROM economy.hot_credit WHERE wallet_id = %s",
    ):
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute(forged, [treasury])
    operator = login("economy_operator")
    assert fold_hot_wallets(operator) == 1
    set_hot(operator, treasury, False)
    assert_exact(conn, treasury)


def test_racing_credits_debits_folds_and_toggles_conserve_money(connect, conn, treasury):
    """8 crediting connections on the hot wallet, 2 debiting it, one folding and
    one turning it hot and back: nothing lost, nothing doubled, never below
    its limit, the exact figures right after every commit."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def run(work):
        c = connect()
        try:
            while not stop.is_set():
                work(c)
        except BaseException as exc:  # reported below
            failures.append(exc)
            stop.set()

    def credit(c):
        post(c, treasury, str(random.choice([1, 2, 5])), kind=random.choice(["fee", "prize"]))

    def debit(c):
        with suppress(errors.CheckViolation):  # below the limit: refused, as it should be
            post(c, treasury, "-3", kind="purchase")

    def fold(c):
        fold_hot_wallets(c)

    def toggle(c):
        set_hot(c, treasury, False)
        set_hot(c, treasury, True)

    def check(c):
        exact = wallet_balance(c, treasury)
        assert exact >= 0, exact
        with c.transaction():
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            assert wallet_balance(c, treasury) == ledger_sum(c, treasury)
            assert drift(c) == []

    workers = [credit] * 8 + [debit] * 2 + [fold, toggle, check]
    threads = [threading.Thread(target=run, args=(work,)) for work in workers]
    for t in threads:
        t.start()
    stop.wait(8)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert ledger_sum(conn, treasury) > 100
    assert_exact(conn, treasury)
    total = conn.execute("SELECT sum(amount) FROM economy.transaction").fetchone()[0]
    assert conn.execute("SELECT sum(balance) FROM economy.wallet").fetchone()[0] == total


def test_cli_hot_fold_and_the_parked_credits_metric(conn, dsn, treasury):
    post(conn, treasury, "5")
    post(conn, treasury, "6")
    assert b'economy_hot_parked_credits{attachment="economy"} 2.0' in collect(conn)
    with redirect_stdout(io.StringIO()) as out:
        assert cli(["--dsn", dsn, "hot", "fold"]) == 0
    assert "Hot wallets folded: 1" in out.getvalue()
    assert b'economy_hot_parked_credits{attachment="economy"} 0.0' in collect(conn)
