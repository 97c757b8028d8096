"""Hot wallets on attached tables (the treasury case): an app's treasury wallet
that takes a fee from every purchase, marked with set_hot(…, attachment =>),
takes credits that do not queue on its row; the app's cached columns catch up
by folds, and drift, reconcile, owner moves, detach and the roles see exact
figures throughout."""

import io
import random
import threading
import time
from contextlib import redirect_stdout
from decimal import Decimal

import psycopg
import pytest
from helpers import SEED_ATTACH, SEED_TABLES, pay, seed_figures
from helpers import attached_drift as drift
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from economy_sync import (
    WalletNotFound,
    fold_hot_wallets,
    migrate,
    reconcile,
    roles,
    set_hot,
    wallet_balance,
)
from economy_sync.cli import main as cli
from economy_sync.metrics import collect

TREASURY, ANA = 3, 1  # seed: wallet 3 has no owner, wallet 1 is profile 1's


@pytest.fixture
def seed(conn):
    """Profiles 1 and 2 with wallets 1 and 2, the ownerless treasury 3; 100 on each
    wallet; wallets 1 and 3 hot."""
    conn.execute(SEED_TABLES)
    conn.execute(SEED_ATTACH)
    conn.execute("INSERT INTO app_profile (username) VALUES ('ana'), ('bo')")
    conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1), (2), (NULL)")
    for wallet in (1, 2, 3):
        pay(conn, wallet, 100)
    for wallet in (ANA, TREASURY):
        set_hot(conn, wallet, attachment="seed")
    return conn


def parked(conn, wallet):
    return conn.execute(
        "SELECT coalesce(sum(credits), 0), coalesce(sum(amount), 0)"
        " FROM economy.attached_hot_credit WHERE attachment = 'seed' AND wallet_id = %s",
        [wallet],
    ).fetchone()


def ledger_sum(conn, wallet):
    return conn.execute(
        "SELECT coalesce(sum(amount), 0) FROM app_transaction WHERE wallet_id = %s", [wallet]
    ).fetchone()[0]


def assert_exact(conn):
    """No drift; exact balances are the ledger's; folded, the caches are too."""
    assert drift(conn, "seed") == []
    for wallet in (1, 2, 3):
        assert wallet_balance(conn, wallet, attachment="seed") == ledger_sum(conn, wallet)
    fold_hot_wallets(conn, attachment="seed")
    assert parked(conn, TREASURY) == (0, 0) and parked(conn, ANA) == (0, 0)
    wallets, _ = seed_figures(conn)
    assert {w: b for w, (b, _) in wallets.items()} == {w: ledger_sum(conn, w) for w in (1, 2, 3)}
    assert drift(conn, "seed") == []


def test_a_credit_is_parked_and_the_exact_figures_count_it(seed):
    pay(seed, TREASURY, 5, "fee")
    pay(seed, ANA, 7, "prize")
    wallets, profiles = seed_figures(seed)
    assert wallets[TREASURY] == (100, 100) and wallets[ANA] == (100, 100)
    assert profiles[1] == (Decimal("100.00"), Decimal("100.00"))
    assert parked(seed, TREASURY) == (1, 5)
    assert wallet_balance(seed, TREASURY, attachment="seed") == 105
    assert wallet_balance(seed, ANA, attachment="seed") == 107
    assert drift(seed, "seed") == []  # the exact figures, not the lagging caches
    assert fold_hot_wallets(seed, attachment="seed") == 2
    wallets, profiles = seed_figures(seed)
    assert wallets[TREASURY] == (105, 105) and wallets[ANA] == (107, 107)
    assert profiles[1] == (Decimal("107.00"), Decimal("107.00"))
    assert fold_hot_wallets(seed, attachment="seed") == 0


def test_credits_do_not_wait_for_each_others_commit(seed, connect):
    first, second = connect(autocommit=False), connect()
    pay(first, TREASURY, 1, "fee")  # uncommitted
    pay(first, ANA, 1, "prize")
    second.execute("SET lock_timeout = '1s'")
    pay(second, TREASURY, 2, "fee")  # would time out if it queued behind the first
    pay(second, ANA, 2, "prize")  # nor on the owner's profile row
    first.commit()
    assert wallet_balance(second, TREASURY, attachment="seed") == 103
    assert_exact(second)


def test_a_debit_folds_first_and_never_counts_uncommitted_credits(seed, connect):
    in_flight = connect(autocommit=False)
    pay(seed, TREASURY, 10, "fee")
    pay(in_flight, TREASURY, 1000, "fee")  # uncommitted
    pay(seed, TREASURY, -50, "payout")  # locks the wallet, folds the committed credit
    assert parked(seed, TREASURY) == (0, 0)
    assert seed_figures(seed)[0][TREASURY] == (60, 110)
    in_flight.commit()
    assert parked(seed, TREASURY) == (1, 1000)
    assert_exact(seed)


def test_balance_after_is_null_for_a_parked_credit_and_exact_after_a_debit(conn):
    conn.execute(SEED_TABLES)
    conn.execute(
        "SELECT economy.attach('seed', 'app_transaction', 'app_wallet',"
        " wallet_balance_column => 'cached_balance',"
        " balance_after_column => 'cached_balance_after')"
    )
    conn.execute("INSERT INTO app_wallet DEFAULT VALUES")
    pay(conn, 1, 100)
    set_hot(conn, 1, attachment="seed")
    pay(conn, 1, 5, "fee")
    pay(conn, 1, -30, "payout")
    after = conn.execute("SELECT cached_balance_after FROM app_transaction ORDER BY id").fetchall()
    assert after == [(100,), (None,), (75,)]
    assert drift(conn, "seed") == []


def test_updates_deletes_and_owner_moves_of_hot_wallets_stay_exact(seed):
    pay(seed, ANA, 40, "prize")  # parked
    seed.execute("UPDATE app_transaction SET amount = 45 WHERE amount = 40")
    assert drift(seed, "seed") == []
    seed.execute("UPDATE app_wallet SET profile_id = 2 WHERE id = %s", [ANA])  # parked credit moves
    assert drift(seed, "seed") == []
    seed.execute("DELETE FROM app_transaction WHERE amount = 45")
    assert drift(seed, "seed") == []
    pay(seed, ANA, 8, "prize")
    seed.execute("UPDATE app_transaction SET wallet_id = 2 WHERE amount = 8")  # across wallets
    assert_exact(seed)
    _, profiles = seed_figures(seed)
    assert profiles == {1: (0, 0), 2: (Decimal("208.00"), Decimal("208.00"))}


def test_a_real_reconcile_folds_and_repairs_to_the_exact_figure(seed):
    pay(seed, TREASURY, 5, "fee")
    with seed.transaction():  # a bad write past the guards, which only the table's owner can make
        seed.execute("ALTER TABLE app_wallet DISABLE TRIGGER USER")
        seed.execute("UPDATE app_wallet SET cached_balance = 1 WHERE id = %s", [TREASURY])
        seed.execute("ALTER TABLE app_wallet ENABLE TRIGGER USER")
    assert drift(seed, "seed") == [(None, TREASURY, "wallet.balance", 6, 105)]
    fixes = reconcile(seed, dry_run=False, attachment="seed").rows
    assert [(f.wallet_id, f.field, f.cached_value, f.ledger_value) for f in fixes] == [
        (TREASURY, "wallet.balance", 6, 105)
    ]
    assert parked(seed, TREASURY) == (0, 0)
    assert seed_figures(seed)[0][TREASURY] == (105, 105)
    assert_exact(seed)


def test_set_hot_false_waits_for_credits_in_flight_and_folds_them(seed, connect):
    in_flight = connect(autocommit=False)
    pay(in_flight, TREASURY, 9, "fee")
    operator = connect()
    operator.execute("SET lock_timeout = '300ms'")
    with pytest.raises(errors.LockNotAvailable):
        set_hot(operator, TREASURY, False, attachment="seed")
    in_flight.commit()
    set_hot(operator, TREASURY, False, attachment="seed")
    assert parked(seed, TREASURY) == (0, 0)
    assert seed_figures(seed)[0][TREASURY] == (109, 109)
    pay(seed, TREASURY, 1, "fee")  # a normal wallet again: applied at once
    assert seed_figures(seed)[0][TREASURY] == (110, 110)


def in_thread(target, *args, **kwargs):
    """target run in a thread: (the thread, [its result or its exception])."""
    outcome = []

    def run():
        try:
            outcome.append(target(*args, **kwargs))
        except Exception as exc:  # reported through outcome
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def parked_rows(conn, wallet):
    return conn.execute(
        "SELECT count(*) FROM economy.attached_hot_credit"
        " WHERE attachment = 'seed' AND wallet_id = %s",
        [wallet],
    ).fetchone()[0]


def test_parked_credits_are_running_sums_so_the_overflow_guard_reads_few_rows(seed, connect):
    # the guard sums the wallet's parked rows for every credit: they must not
    # grow with the credits, only with the credits in flight at once
    for _ in range(200):
        pay(seed, TREASURY, 1, "fee")
    assert parked(seed, TREASURY) == (200, 200) and parked_rows(seed, TREASURY) == 1
    in_flight = [connect(autocommit=False) for _ in range(3)]
    for conn in in_flight:
        pay(conn, TREASURY, 10, "fee")  # each holds a row: the others start their own
    for conn in in_flight:
        conn.commit()
    assert parked_rows(seed, TREASURY) == 3
    fold_hot_wallets(seed, attachment="seed")  # merges them into its one fold row
    assert parked_rows(seed, TREASURY) == 1 and parked(seed, TREASURY) == (0, 0)
    pay(seed, TREASURY, 5, "fee")
    pay(seed, TREASURY, -1, "payout")
    assert parked_rows(seed, TREASURY) == 1 and parked(seed, TREASURY) == (0, 0)
    assert_exact(seed)


def test_repeatable_read_credits_start_rows_that_the_next_fold_merges(seed, connect):
    buyer = connect(autocommit=False)
    for _ in range(40):
        buyer.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        pay(buyer, TREASURY, 1, "fee")  # a row of its own
        buyer.commit()
    assert parked(seed, TREASURY) == (40, 40) and parked_rows(seed, TREASURY) == 40
    fold_hot_wallets(seed, attachment="seed")
    assert parked_rows(seed, TREASURY) == 1
    assert_exact(seed)


def test_a_fold_never_waits_for_a_credit_in_flight(seed, connect):
    pay(seed, TREASURY, 10, "fee")
    in_flight = connect(autocommit=False)
    pay(in_flight, TREASURY, 1000, "fee")  # adds to the committed credit's row, holds it
    seed.execute("SET lock_timeout = '1s'")
    pay(seed, TREASURY, -50, "payout")  # folds the committed 10 without waiting
    assert seed_figures(seed)[0][TREASURY] == (60, 110)
    assert fold_hot_wallets(seed, attachment="seed") == 0
    in_flight.commit()
    assert wallet_balance(seed, TREASURY, attachment="seed") == 1060
    assert_exact(seed)


def test_set_hot_false_waits_for_a_credit_holding_a_parked_row_which_may_then_debit(seed, connect):
    pay(seed, TREASURY, 10, "fee")
    in_flight = connect(autocommit=False)
    pay(in_flight, TREASURY, 7, "fee")  # holds the wallet's parked row
    turned, outcome = in_thread(set_hot, connect(), TREASURY, False, attachment="seed")
    turned.join(0.5)
    assert turned.is_alive()  # waiting for the credit in flight
    in_flight.execute("SET lock_timeout = '5s'")
    pay(in_flight, TREASURY, -3, "payout")  # the same transaction debits: no deadlock
    in_flight.commit()
    turned.join(10)
    assert not turned.is_alive() and outcome == [None]
    assert parked_rows(seed, TREASURY) == 0
    assert seed_figures(seed)[0][TREASURY] == (114, 117)
    assert_exact(seed)


def test_detach_waits_for_a_credit_in_flight_that_adds_to_a_parked_row(seed, connect):
    pay(seed, TREASURY, 10, "fee")  # a parked row: the next credit adds to it
    in_flight = connect(autocommit=False)
    pay(in_flight, TREASURY, 9, "fee")
    thread, outcome = in_thread(connect().execute, "SELECT economy.detach('seed')")
    thread.join(0.5)
    assert thread.is_alive()
    in_flight.commit()
    thread.join(15)
    assert not thread.is_alive() and not isinstance(outcome[0], Exception)
    assert seed_figures(seed)[0][TREASURY] == (119, 119)


def test_a_multi_row_insert_after_set_hot_false_began_does_not_deadlock(seed, connect):
    pay(seed, TREASURY, 10, "fee")
    buyer = connect(autocommit=False)
    pay(buyer, TREASURY, 1, "fee")
    thread, outcome = in_thread(set_hot, connect(), TREASURY, False, attachment="seed")
    thread.join(0.5)
    assert thread.is_alive()  # waiting for the buyer
    buyer.execute(
        "INSERT INTO app_transaction (wallet_id, amount, reason)"
        " VALUES (%s, 2, 'fee'), (%s, 3, 'fee')",
        [TREASURY, TREASURY],
    )
    buyer.commit()
    thread.join(15)
    assert not thread.is_alive() and outcome == [None]
    assert seed_figures(seed)[0][TREASURY] == (116, 116)


def test_two_purchases_crediting_two_hot_wallets_never_deadlock_with_two_set_hot_false(
    seed, connect
):
    pay(seed, TREASURY, 10, "fee")
    pay(seed, ANA, 10, "prize")  # both wallets have a parked row
    first, second = connect(autocommit=False), connect(autocommit=False)
    pay(first, ANA, 1, "prize")
    pay(second, TREASURY, 1, "fee")
    turns = [in_thread(set_hot, connect(), w, False, attachment="seed") for w in (ANA, TREASURY)]
    time.sleep(0.5)

    def then_credit(conn, wallet):
        pay(conn, wallet, 2, "fee")
        conn.commit()

    credits = [in_thread(then_credit, first, TREASURY), in_thread(then_credit, second, ANA)]
    for thread, outcome in credits + turns:
        thread.join(30)
        assert not thread.is_alive() and outcome == [None]
    assert_exact(seed)


def test_a_repeatable_read_credit_parks_beside_credits_committed_since_its_snapshot(seed, connect):
    pay(seed, TREASURY, 10, "fee")
    buyer = connect(autocommit=False)
    buyer.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    buyer.execute("SELECT 1")  # the snapshot
    pay(seed, TREASURY, 5, "fee")  # adds to the row the buyer's snapshot has older
    pay(buyer, TREASURY, 7, "fee")
    buyer.commit()
    assert wallet_balance(seed, TREASURY, attachment="seed") == 122
    assert_exact(seed)


def test_set_hot_false_is_refused_outside_read_committed(seed, connect):
    operator = connect(autocommit=False)
    operator.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    with pytest.raises(errors.InvalidTransactionState, match="READ COMMITTED"):
        set_hot(operator, TREASURY, False, attachment="seed")


def test_the_overflow_guard_counts_every_hot_wallet_of_the_owner(seed):
    seed.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")  # ana's second wallet
    set_hot(seed, 4, attachment="seed")
    pay(seed, ANA, 60_000_000, "prize")  # profile 1: 60,000,100.00 fits numeric(10, 2)
    with pytest.raises(errors.NumericValueOutOfRange):
        pay(seed, 4, 60_000_000, "prize")  # 120,000,100.00 would not
    with pytest.raises(errors.NumericValueOutOfRange):
        seed.execute(
            "INSERT INTO app_transaction (wallet_id, amount, reason)"
            " VALUES (4, 30000000, 'prize'), (4, 30000000, 'prize')"
        )
    pay(seed, ANA, -5, "payout")  # the wallets keep working
    pay(seed, 4, 5, "prize")
    assert fold_hot_wallets(seed, attachment="seed") == 1
    assert seed_figures(seed)[1][1] == (Decimal("60000100.00"), Decimal("60000105.00"))
    assert drift(seed, "seed") == []


# Any write that raises a bounded cached column is checked against what is
# parked for the wallet and its owner: else no fold could write the figures,
# and every debit of the hot wallet (which folds first) would fail.


def overflowing_writes(seed):
    seed.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")  # ana's wallet 4, not hot
    pay(seed, ANA, 60_000_000, "prize")  # parked: profile 1's exact 60,000,100.00 fits
    pay(seed, TREASURY, 2_000_000_000, "fee")  # parked: the exact 2,000,000,100 fits integer
    pay(seed, 2, 60_000_000, "prize")  # bo, a normal wallet: 60,000,100.00
    return {
        "a credit to the owner's normal wallet": lambda: pay(seed, 4, 60_000_000, "prize"),
        "a multi-row insert": lambda: seed.execute(
            "INSERT INTO app_transaction (wallet_id, amount, reason)"
            " VALUES (4, 30000000, 'prize'), (4, 30000000, 'prize')"
        ),
        "an owner move": lambda: seed.execute(
            "UPDATE app_wallet SET profile_id = 2 WHERE id = %s", [ANA]
        ),
        "a ledger update": lambda: seed.execute(
            "UPDATE app_transaction SET amount = 200000000 WHERE wallet_id = %s AND amount = 100",
            [TREASURY],
        ),
    }


@pytest.mark.parametrize(
    "write",
    [
        "a credit to the owner's normal wallet",
        "a multi-row insert",
        "an owner move",
        "a ledger update",
    ],
)
def test_a_write_that_would_overflow_with_the_parked_credits_is_refused(seed, write):
    writes = overflowing_writes(seed)
    with pytest.raises(errors.NumericValueOutOfRange), seed.transaction():
        writes[write]()
    assert fold_hot_wallets(seed, attachment="seed") == 2  # the wallets keep working
    pay(seed, ANA, -1, "payout")
    pay(seed, TREASURY, -1, "payout")
    assert drift(seed, "seed") == []


def test_the_guard_reads_a_hot_wallets_owner_from_the_wallet_table(seed, connect):
    # the owner the guard charges is the wallet's own, whatever moved it (here
    # a move committed while set_hot made it hot)
    seed.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")  # ana's wallet 4
    mover = connect(autocommit=False)
    mover.execute("UPDATE app_wallet SET profile_id = 2 WHERE id = 4")
    set_hot(seed, 4, attachment="seed")
    mover.commit()
    pay(seed, 4, 60_000_000, "prize")  # parked for bo, now its owner
    pay(seed, ANA, 60_000_000, "prize")  # ana's figures fit: not charged with wallet 4's
    with pytest.raises(errors.NumericValueOutOfRange):
        pay(seed, 2, 60_000_000, "prize")  # bo's would be 120,000,100.00
    with pytest.raises(errors.NumericValueOutOfRange), seed.transaction():
        seed.execute("UPDATE app_wallet SET profile_id = 1 WHERE id = 4")  # ana: 120,000,100.00
    assert fold_hot_wallets(seed, attachment="seed") == 2  # each owner's 60,000,100.00 fits
    assert drift(seed, "seed") == []


def test_detach_folds_first_so_the_app_keeps_exact_caches(seed):
    pay(seed, TREASURY, 5, "fee")
    pay(seed, ANA, 5, "prize")
    seed.execute("SELECT economy.detach('seed')")
    wallets, profiles = seed_figures(seed)
    assert wallets[TREASURY] == (105, 105) and wallets[ANA] == (105, 105)
    assert profiles[1] == (Decimal("105.00"), Decimal("105.00"))
    assert seed.execute("SELECT count(*) FROM economy.attached_hot_credit").fetchone() == (0,)
    assert seed.execute("SELECT count(*) FROM economy.attached_hot_wallet").fetchone() == (0,)


def test_unknown_wallets_and_attachments(seed):
    with pytest.raises(WalletNotFound):
        set_hot(seed, 99, attachment="seed")
    with pytest.raises(WalletNotFound):
        wallet_balance(seed, 99, attachment="seed")
    with pytest.raises(errors.UndefinedObject):
        fold_hot_wallets(seed, attachment="nope")


def test_roles(seed, login):
    pay(seed, TREASURY, 5, "fee")
    app = login("economy_app")
    assert wallet_balance(app, TREASURY, attachment="seed") == 105
    assert drift(app, "seed") == []
    for statement in (
        "SELECT economy.set_hot(1, attachment => 'seed')",
        "SELECT economy.fold_hot_wallets(attachment => 'seed')",
        "SELECT economy.attached_seed_fold(NULL)",
        "SELECT economy.attached_seed_set_hot(2, true)",
        # parked rows are money: the app may read them, never write them
        "INSERT INTO economy.attached_hot_credit VALUES ('seed', 3, 1000, 0)",
        "DELETE FROM economy.attached_hot_credit",
        "UPDATE economy.attached_hot_credit SET amount = amount + 1000",
        "SELECT economy.park_attached_credit('seed', 3, 1000, 0)",
        "INSERT INTO economy.attached_hot_wallet VALUES ('seed', 2)",
    ):
        with pytest.raises(errors.InsufficientPrivilege), app.transaction():
            app.execute(statement)
    operator = login("economy_operator")
    set_hot(operator, 2, attachment="seed")
    assert fold_hot_wallets(operator, attachment="seed") == 1
    assert_exact(seed)


def test_racing_purchases_payouts_folds_toggles_and_reconciles_conserve_money(seed, connect):
    """Every purchase pays a fee to the hot treasury; payouts debit it; folds,
    hot/normal toggles and real reconciles run beside them."""
    stop, repairs, failures = threading.Event(), [], []

    def buyer(number):
        c, rng = connect(), random.Random(number)
        for _ in range(60):
            wallet = rng.choice((1, 2))
            with c.transaction():
                pay(c, wallet, 20, "prize")
                pay(c, wallet, -7, "purchase")
                pay(c, TREASURY, 2, "fee")

    def operator():
        c, rng = connect(), random.Random(99)
        while not stop.is_set():
            action = rng.choice(("fold", "payout", "toggle", "reconcile"))
            if action == "fold":
                fold_hot_wallets(c, attachment="seed")
            elif action == "payout":
                pay(c, TREASURY, -1, "payout")
            elif action == "toggle":
                set_hot(c, rng.choice((ANA, TREASURY)), rng.random() < 0.7, attachment="seed")
            else:
                repairs.extend(reconcile(c, dry_run=False, attachment="seed").rows)

    def guarded(target, *args):
        try:
            target(*args)
        except Exception as exc:  # reported below: a thread's exception is otherwise lost
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(buyer, n)) for n in range(6)]
    background = threading.Thread(target=guarded, args=(operator,))
    background.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    background.join()
    assert failures == []
    assert repairs == []
    assert ledger_sum(seed, 1) + ledger_sum(seed, 2) == 200 + 6 * 60 * 13
    assert_exact(seed)


def test_cli_hot_fold_and_the_parked_credits_metric(seed, dsn):
    pay(seed, TREASURY, 5, "fee")
    pay(seed, TREASURY, 6, "fee")
    assert b'economy_hot_parked_credits{attachment="seed"} 2.0' in collect(seed, "seed")
    assert b'economy_hot_parked_credits{attachment="economy"} 0.0' in collect(seed)
    with redirect_stdout(io.StringIO()) as out:
        assert cli(["--dsn", dsn, "hot", "fold", "--attachment", "seed"]) == 0
    assert "Hot wallets folded: 1" in out.getvalue()
    assert b'economy_hot_parked_credits{attachment="seed"} 0.0' in collect(seed, "seed")


def test_tables_of_another_owner_attach_when_the_installer_is_their_member(empty_dsn):
    """The README's recipe for tables that belong to another role than the one
    that installed the package: make the installer a member of their owner. The
    installer is no superuser (on a managed server, the tests' own role)."""
    installer_dsn = empty_dsn
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        superuser = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        if admin.execute(superuser).fetchone()[0]:
            admin.execute(
                "DO $$ BEGIN CREATE ROLE economy_test_installer LOGIN CREATEROLE;"
                " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            )
            database = conninfo_to_dict(empty_dsn)["dbname"]
            admin.execute(f'ALTER DATABASE "{database}" OWNER TO economy_test_installer')
            # the roles exist (the template's install made them): on 16+ CREATEROLE
            # grants only roles it made, so the administrator runs the recipe
            admin.execute(roles.recipe("economy_test_installer"))
            installer_dsn = make_conninfo(empty_dsn, user="economy_test_installer")
    migrate.upgrade(installer_dsn)
    with psycopg.connect(installer_dsn, autocommit=True) as installer:
        installer.execute(
            "DO $$ BEGIN CREATE ROLE economy_test_shop LOGIN;"
            " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        installer.execute("GRANT CREATE ON SCHEMA public TO economy_test_shop")
        shop_dsn = make_conninfo(empty_dsn, user="economy_test_shop")
        with psycopg.connect(shop_dsn, autocommit=True) as shop:
            shop.execute(SEED_TABLES)
            shop.execute("INSERT INTO app_profile DEFAULT VALUES")
            shop.execute("INSERT INTO app_wallet (profile_id) VALUES (1), (NULL)")
        installer.execute("GRANT economy_test_shop TO current_user")
        installer.execute(SEED_ATTACH)
        set_hot(installer, 2, attachment="seed")  # the ownerless wallet
        with psycopg.connect(shop_dsn, autocommit=True) as shop:
            pay(shop, 1, 10)
            pay(shop, 2, 3, "fee")  # parked
            assert seed_figures(shop)[0] == {1: (10, 10), 2: (0, 0)}
        assert wallet_balance(installer, 2, attachment="seed") == 3
        assert fold_hot_wallets(installer, attachment="seed") == 1
        assert drift(installer, "seed") == []
        installer.execute("SELECT economy.detach('seed')")
