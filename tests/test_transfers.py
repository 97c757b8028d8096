"""Transfers into hot wallets, several transfers in one call (transfer_many),
and metadata on every entry: as the app role, raced by several connections."""

import itertools
import random
import threading
from contextlib import suppress
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from helpers import balances, drift, open_wallet, post
from psycopg import errors
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from economy_sync import (
    fold_hot_wallets,
    post_transaction,
    prune_transfer_keys,
    set_hot,
    transfer,
    transfer_many,
    wallet_balance,
)
from economy_sync.cli import main as cli

ORDER = {"order": "A-17", "lines": [1, 2]}


@pytest.fixture
def wallets(conn):
    """Wallets of users 1-4 with 100.00 each; user 1's (the house) is hot."""
    ids = [open_wallet(conn, user) for user in (1, 2, 3, 4)]
    for wallet_id in ids:
        post(conn, wallet_id, "100", kind="prize")
    set_hot(conn, ids[0])
    return ids


@pytest.fixture
def app(login):
    """A connection of an app login (a member of economy_app)."""
    return login("economy_app")


def entry_count(conn) -> int:
    return conn.execute("SELECT count(*) FROM economy.transaction").fetchone()[0]


def assert_conserved_and_exact(conn):
    """No drift; folded, every cache equals the ledger, and transfers and
    reversals made no money."""
    assert drift(conn) == []
    fold_hot_wallets(conn)
    assert drift(conn) == []
    total = conn.execute("SELECT sum(amount) FROM economy.transaction").fetchone()[0]
    assert conn.execute("SELECT sum(balance) FROM economy.wallet").fetchone()[0] == total
    assert (
        conn.execute(
            "SELECT coalesce(sum(amount), 0) FROM economy.transaction WHERE kind = 'transfer'"
        ).fetchone()[0]
        == 0
    )


def test_transfers_into_a_hot_wallet_wait_for_no_other_credit(connect, login, wallets):
    house, *users = wallets
    first = login("economy_app")
    first.autocommit = False
    transfer(first, users[0], house, Decimal("5"))  # uncommitted
    second = login("economy_app")
    second.execute("SET lock_timeout = '1s'")  # a wait would fail, not slow down
    transfer(second, users[1], house, Decimal("7"))
    transfer_many(second, [(users[2], house, Decimal("1")), (users[1], house, Decimal("2"))])
    post(second, house, "3", kind="fee")
    first.commit()
    assert wallet_balance(second, house) == Decimal("118.00")
    assert_conserved_and_exact(connect())


def test_into_a_normal_wallet_the_same_transfers_queue(login, wallets):
    _, shop, *users = wallets
    first = login("economy_app")
    first.autocommit = False
    transfer(first, users[0], shop, Decimal("5"))
    second = login("economy_app")
    second.execute("SET lock_timeout = '200ms'")
    with pytest.raises(errors.LockNotAvailable):
        transfer(second, users[1], shop, Decimal("7"))
    first.rollback()


def test_a_hot_transfer_keeps_its_pairing_reversal_and_replay(conn, app, wallets):
    house, user = wallets[0], wallets[1]
    debit, credit = transfer(app, user, house, Decimal("4.50"), idempotency_key="buy-1")
    assert credit.transfer_debit_id == debit.id and credit.balance_after is None  # parked
    assert [e.id for e in transfer(app, user, house, Decimal("4.50"), "buy-1")] == [
        debit.id,
        credit.id,
    ]
    with pytest.raises(errors.UniqueViolation):
        transfer(app, user, house, Decimal("4.51"), "buy-1")
    # reversing the parked credit is a debit of the hot wallet: both legs go back
    app.execute("SELECT economy.reverse_transaction(%s)", [credit.id])
    with pytest.raises(errors.UniqueViolation, match="already reversed"):
        app.execute("SELECT economy.reverse_transaction(%s)", [debit.id])
    assert balances(conn, user)[0] == Decimal("100.00")
    assert wallet_balance(conn, house) == Decimal("100.00")
    assert_conserved_and_exact(conn)


def test_transfer_many_returns_each_debit_then_its_credit(conn, app, wallets):
    house, a, b, c = wallets
    legs = transfer_many(
        app,
        [(a, b, Decimal("10")), (a, house, Decimal("1.25")), (c, a, Decimal("3"))],
        memo="order A-17",
        metadata=ORDER,
    )
    assert [(e.wallet_id, e.amount) for e in legs] == [
        (a, Decimal("-10.00")),
        (b, Decimal("10.00")),
        (a, Decimal("-1.25")),
        (house, Decimal("1.25")),
        (c, Decimal("-3.00")),
        (a, Decimal("3.00")),
    ]
    assert [e.transfer_debit_id for e in legs] == [
        None,
        legs[0].id,
        None,
        legs[2].id,
        None,
        legs[4].id,
    ]
    assert all((e.kind, e.memo, e.metadata) == ("transfer", "order A-17", ORDER) for e in legs)
    assert [e.id for e in legs] == sorted(e.id for e in legs)
    assert balances(conn, a)[0] == Decimal("91.75")
    assert wallet_balance(conn, house) == Decimal("101.25")
    # either leg of one of its transfers reverses that transfer's two legs
    conn.execute("SELECT economy.reverse_transaction(%s)", [legs[1].id])
    assert balances(conn, a)[0] == Decimal("101.75")
    assert balances(conn, b)[0] == Decimal("100.00")
    assert_conserved_and_exact(conn)


@pytest.mark.parametrize(
    ("transfers", "error"),
    [
        ([(2, 3, "150")], errors.CheckViolation),  # over the overdraft limit
        ([(2, 3, "10"), (3, 2, "10"), (2, 3, "100")], errors.CheckViolation),  # a later debit
        ([(2, 999, "1")], errors.ForeignKeyViolation),
        ([(2, 3, "1"), (4, 4, "1")], errors.CheckViolation),
        ([(2, 3, "0")], errors.CheckViolation),
        ([(2, 3, "-1")], errors.CheckViolation),
        ([(2, 3, "NaN")], errors.CheckViolation),
        ([(2, 3, "Infinity")], errors.CheckViolation),
        ([(2, 3, "0.001")], errors.CheckViolation),
        ([(2, 3, "1000000000000000")], errors.CheckViolation),
        ([(2, None, "1")], errors.NotNullViolation),
        ([(2, 3, None)], errors.CheckViolation),
    ],
)
def test_one_refused_transfer_refuses_the_call(conn, app, wallets, transfers, error):
    by_user = dict(zip((1, 2, 3, 4, 999, None), [*wallets, 999, None], strict=True))
    named = [
        (by_user[payer], by_user[payee], None if amount is None else Decimal(amount))
        for payer, payee, amount in [(2, 4, "1"), *transfers]
    ]
    before = entry_count(conn)
    with pytest.raises(error):
        transfer_many(app, named)
    assert entry_count(conn) == before
    assert_conserved_and_exact(conn)


@pytest.mark.parametrize(
    "arrays",
    [
        "ARRAY[]::bigint[], ARRAY[]::bigint[], ARRAY[]::numeric[]",
        "ARRAY[%(a)s, %(b)s]::bigint[], ARRAY[%(b)s]::bigint[], ARRAY[1, 2]::numeric[]",
        "ARRAY[%(a)s]::bigint[], ARRAY[%(b)s]::bigint[], ARRAY[1, 2]::numeric[]",
        "NULL, ARRAY[%(b)s]::bigint[], ARRAY[1]::numeric[]",
        "ARRAY[[%(a)s]]::bigint[], ARRAY[[%(b)s]]::bigint[], ARRAY[[1]]::numeric[]",
    ],
)
def test_arrays_of_other_lengths_are_an_invalid_parameter(app, wallets, arrays):
    with pytest.raises(errors.InvalidParameterValue, match="one length"):
        app.execute(
            f"SELECT economy.transfer_many({arrays})",  # the test's own constants
            {"a": wallets[1], "b": wallets[2]},
        )


def test_arrays_of_any_bounds_pair_their_elements_by_position(conn, app, wallets):
    _, a, b, c = wallets
    legs = app.execute(
        "SELECT wallet_id, amount, transfer_debit_id, id FROM economy.transfer_many("
        "%s::bigint[], %s::bigint[], %s::numeric[])",
        [f"[0:1]={{{a},{b}}}", f"[7:8]={{{b},{c}}}", "[-3:-2]={1.5,2.25}"],
    ).fetchall()
    assert [(wallet_id, amount) for wallet_id, amount, _, _ in legs] == [
        (a, Decimal("-1.50")),
        (b, Decimal("1.50")),
        (b, Decimal("-2.25")),
        (c, Decimal("2.25")),
    ]
    assert legs[1][2] == legs[0][3] and legs[3][2] == legs[2][3]
    assert_conserved_and_exact(conn)


@pytest.mark.parametrize(
    ("first", "again"),
    [("'null'::jsonb", "NULL"), ("NULL", "'null'::jsonb"), ("'{}'::jsonb", "'[]'::jsonb")],
)
def test_a_replay_tells_json_null_from_no_metadata(conn, app, wallets, first, again):
    _, a, b, _ = wallets
    for call in (
        "SELECT * FROM economy.transfer_many(ARRAY[%s]::bigint[], ARRAY[%s]::bigint[],"
        " ARRAY[1]::numeric[], idempotency_key => 'many', metadata => {})",
        "SELECT * FROM economy.transfer(%s, %s, 1, idempotency_key => 'one', metadata => {})",
    ):
        app.execute(call.format(first), [a, b]).fetchall()  # the test's own constants
        with pytest.raises(errors.UniqueViolation):
            app.execute(call.format(again), [a, b]).fetchall()
    assert_conserved_and_exact(conn)


def test_a_key_names_the_whole_call(conn, app, wallets):
    house, a, b, c = wallets
    call = [(a, b, Decimal("5")), (a, house, Decimal("1")), (b, c, Decimal("2"))]
    first = transfer_many(app, call, idempotency_key="payout-9", metadata=ORDER)
    before = entry_count(conn)
    again = transfer_many(app, call, idempotency_key="payout-9", metadata=ORDER)
    assert again == first
    assert entry_count(conn) == before
    for other in (
        {"transfers": call[:2]},
        {"transfers": [*call, (c, a, Decimal("1"))]},
        {"transfers": [call[1], call[0], call[2]]},
        {"transfers": [(a, b, Decimal("5.01")), *call[1:]]},
        {"transfers": [(a, c, Decimal("5")), *call[1:]]},
        {"transfers": call, "memo": "other"},
        {"transfers": call, "metadata": {"order": "A-18"}},
        {"transfers": call, "metadata": None},
    ):
        with pytest.raises(errors.UniqueViolation, match="payout-9"):
            transfer_many(app, idempotency_key="payout-9", **{"metadata": ORDER} | other)
    assert entry_count(conn) == before
    assert_conserved_and_exact(conn)


def test_racing_calls_of_one_key_write_once(connect, conn, wallets):
    _, a, b, _ = wallets
    first = connect(autocommit=False)
    legs = transfer_many(first, [(a, b, Decimal("1"))] * 3, idempotency_key="k")
    results = []
    second = threading.Thread(
        target=lambda: results.append(
            transfer_many(connect(), [(a, b, Decimal("1"))] * 3, idempotency_key="k")
        )
    )
    second.start()
    second.join(0.3)
    assert second.is_alive()  # waits for the first call's commit
    first.commit()
    second.join()
    assert results == [legs]
    assert balances(conn, a)[0] == Decimal("97.00")


def test_metadata_on_every_entry_and_in_every_replay(conn, app, wallets):
    _, a, b, _ = wallets
    entry = post_transaction(app, a, Decimal("2"), "reward", idempotency_key="r-1", metadata=ORDER)
    assert entry.metadata == ORDER
    assert post_transaction(app, a, Decimal("2"), "reward", "r-1", metadata=ORDER) == entry
    with pytest.raises(errors.UniqueViolation):
        post_transaction(app, a, Decimal("2"), "reward", "r-1", metadata={"order": "other"})
    with pytest.raises(errors.UniqueViolation):
        post_transaction(app, a, Decimal("2"), "reward", "r-1")
    legs = transfer(app, a, b, Decimal("1"), idempotency_key="t-1", metadata=ORDER)
    assert [e.metadata for e in legs] == [ORDER, ORDER]
    with pytest.raises(errors.UniqueViolation):
        transfer(app, a, b, Decimal("1"), idempotency_key="t-1", metadata={"order": "other"})
    app.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind, metadata)"
        " VALUES (%s, 1, 'fee', %s)",
        [b, Jsonb({"match": 3})],
    )
    assert (
        conn.execute(
            'SELECT count(*) FROM economy.transaction WHERE metadata @> \'{"order": "A-17"}\''
        ).fetchone()[0]
        == 3
    )
    assert conn.execute(
        "SELECT amount FROM economy.transaction WHERE metadata ->> 'match' = '3'"
    ).fetchone()[0] == Decimal("1.00")
    assert_conserved_and_exact(conn)


def test_a_login_outside_the_package_roles_may_not_transfer(conn, wallets, dsn):
    conn.execute("CREATE ROLE economy_test_stranger LOGIN")
    try:
        with (
            psycopg.connect(make_conninfo(dsn, user="economy_test_stranger")) as stranger,
            pytest.raises(errors.InsufficientPrivilege),
        ):
            transfer_many(stranger, [(wallets[1], wallets[2], Decimal("1"))])
    finally:
        conn.execute("DROP ROLE economy_test_stranger")


def test_a_hot_wallet_pays_receives_and_pays_in_the_calls_order(conn, app, wallets):
    """Its credit between two of its debits counts for the second, as it would
    for a normal wallet (the statement holds the wallet since its first debit)."""
    house, a, b, c = wallets
    calls = [(house, a, Decimal("80")), (b, house, Decimal("50")), (house, c, Decimal("60"))]
    legs = transfer_many(app, calls)
    assert [e.balance_after for e in legs if e.wallet_id == house] == [
        Decimal("20.00"),
        Decimal("70.00"),
        Decimal("10.00"),
    ]
    assert wallet_balance(conn, house) == Decimal("10.00")
    with pytest.raises(errors.CheckViolation, match="overdraft"):
        transfer_many(app, [(house, a, Decimal("11")), (b, house, Decimal("1"))])
    assert_conserved_and_exact(conn)


def test_racing_transfers_replays_reversals_and_the_operator_never_deadlock(login, conn):
    """Six wallets, two of them hot: app logins doing transfer_many in random
    orders (hot wallets paying and receiving), transfers with keys (replayed),
    reversals of random legs; the operator turning the hot wallets back and
    forth, reconciling and folding. No deadlock, no money made or lost, no
    wallet below its limit, each leg reversed at most once and a transfer's
    legs both or neither, nothing to repair."""
    wallets = [open_wallet(conn, user, "50" if user == 13 else "0") for user in range(11, 17)]
    for wallet_id in wallets:
        post(conn, wallet_id, "100", kind="prize")
    hot = wallets[:2]
    for wallet_id in hot:
        set_hot(conn, wallet_id)
    stop = threading.Event()
    failures: list[BaseException] = []
    legs: list = []
    keys = itertools.count()

    def run(work, c):
        try:
            while not stop.is_set():
                # refused (below a limit, a reused key, a leg reversed already): as it should be
                with suppress(errors.CheckViolation, errors.UniqueViolation):
                    work(c)
        except BaseException as exc:  # reported below
            failures.append(exc)
            stop.set()

    def many(c):
        calls = [
            (*random.sample(wallets, 2), Decimal(random.choice(["0.01", "1", "7.50"])))
            for _ in range(random.randint(1, 5))
        ]
        key = f"many-{next(keys) // 3}" if random.random() < 0.3 else None
        legs.extend(transfer_many(c, calls, idempotency_key=key, metadata={"n": len(calls)}))

    def keyed(c):
        legs.extend(transfer(c, *random.sample(wallets, 2), Decimal("2"), f"t-{next(keys) % 50}"))

    def reverse(c):
        if legs:
            c.execute("SELECT economy.reverse_transaction(%s)", [random.choice(legs[-50:]).id])

    def operate(c):
        wallet_id = random.choice(hot)
        set_hot(c, wallet_id, False)
        c.execute("SELECT count(*) FROM economy.reconcile_economy(dry_run => false)")
        set_hot(c, wallet_id, True)
        fold_hot_wallets(c)

    workers = [(many, "economy_app")] * 4 + [(keyed, "economy_app")] * 2
    workers += [(reverse, "economy_app")] * 2 + [(operate, "economy_operator")]
    threads = [threading.Thread(target=run, args=(work, login(role))) for work, role in workers]
    for t in threads:
        t.start()
    stop.wait(12)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert len(legs) > 50
    assert conn.execute("SELECT count(*) FROM economy.reconcile_log").fetchone()[0] == 0
    assert (
        conn.execute(
            "SELECT w.id FROM economy.wallet w"
            " WHERE economy.wallet_balance(w.id) < -w.overdraft_limit"
        ).fetchall()
        == []
    )
    assert (
        conn.execute(
            "SELECT c.id FROM economy.transaction c"
            " JOIN economy.transaction d ON d.id = c.transfer_debit_id"
            " WHERE (SELECT count(*) FROM economy.transaction r"
            " WHERE r.reverses_id IN (c.id, d.id)) NOT IN (0, 2)"
        ).fetchall()
        == []
    )
    assert_conserved_and_exact(conn)


def test_old_call_keys_are_pruned_by_the_operator_alone(conn, app, wallets, dsn, login):
    _, a, b, _ = wallets
    transfer_many(app, [(a, b, Decimal("1"))], idempotency_key="old")
    transfer_many(app, [(a, b, Decimal("1"))], idempotency_key="new")
    conn.execute(
        "UPDATE economy.transfer_many_call SET created_at = now() - interval '40 days'"
        " WHERE idempotency_key = 'old'"
    )
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute("SELECT economy.prune_transfer_keys('1 day')")
    assert cli(["prune-keys", "--older-than", "30d", "--dsn", dsn]) == 0
    assert conn.execute("SELECT idempotency_key FROM economy.transfer_many_call").fetchall() == [
        ("new",)
    ]
    assert prune_transfer_keys(login("economy_operator"), timedelta(0)) == 1
    with pytest.raises(errors.InvalidParameterValue):
        conn.execute("SELECT economy.prune_transfer_keys('-1 day')")
    assert_conserved_and_exact(conn)
