"""Several real connections racing: no lost or doubled amount, no deadlock
surfacing, reconcile never "fixes" a correct value."""

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
import pytest
from helpers import balances, drift, load_without_sync, open_wallet, post
from psycopg import errors

from economy_sync import advance_checkpoint

CLIENTS = 8


def race(connect, work, clients=CLIENTS):
    """Run work(conn, client_number) on `clients` connections at once; return the results."""
    conns = [connect() for _ in range(clients)]
    start = threading.Barrier(clients)

    def run(number):
        start.wait()
        return work(conns[number], number)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(run, range(clients)))


def test_hot_wallet_loses_no_update(conn, connect):
    wallet_id = open_wallet(conn, 1)
    per_client = 40

    def credit(c, _):
        for _ in range(per_client):
            post(c, wallet_id, "1.01", kind="prize")

    race(connect, credit)
    expected = Decimal("1.01") * CLIENTS * per_client
    assert balances(conn, wallet_id) == (expected, expected, expected)
    assert drift(conn) == []


def test_hot_wallet_debits_never_break_the_overdraft_limit(conn, connect):
    wallet_id = open_wallet(conn, 1, overdraft_limit="5")
    post(conn, wallet_id, "100")

    def spend(c, _):
        accepted = 0
        for _ in range(20):
            try:
                post(c, wallet_id, "-1", kind="purchase")
                accepted += 1
            except errors.CheckViolation:
                pass
        return accepted

    accepted = sum(race(connect, spend))
    assert accepted == 105  # exactly down to -overdraft_limit, never below
    assert balances(conn, wallet_id)[0] == Decimal("-5.00")
    assert drift(conn) == []


def test_opposite_transfers_never_deadlock(conn, connect):
    a, b = open_wallet(conn, 1), open_wallet(conn, 2)
    post(conn, a, "1000")
    post(conn, b, "1000")

    def shuttle(c, number):
        source, target = (a, b) if number % 2 else (b, a)
        for _ in range(30):
            c.execute("SELECT economy.transfer(%s, %s, 1.5)", [source, target])

    race(connect, shuttle)  # a DeadlockDetected would surface here
    assert balances(conn, a)[0] + balances(conn, b)[0] == Decimal("2000.00")
    assert balances(conn, a)[0] == Decimal("1000.00")  # as many each way
    assert drift(conn) == []


def test_transfers_in_a_ring_never_deadlock(conn, connect):
    wallets = [open_wallet(conn, user) for user in range(1, 5)]
    for wallet_id in wallets:
        post(conn, wallet_id, "500")

    def ring(c, number):
        for step in range(25):
            source = wallets[(number + step) % 4]
            target = wallets[(number + step + 1 + number % 2) % 4]
            c.execute("SELECT economy.transfer(%s, %s, 2)", [source, target])

    race(connect, ring)
    total = sum(balances(conn, w)[0] for w in wallets)
    assert total == Decimal("2000.00")
    assert drift(conn) == []


def test_same_idempotency_key_racing_writes_one_entry(conn, connect):
    wallet_id = open_wallet(conn, 1)
    ids = race(connect, lambda c, _: post(c, wallet_id, "7", idempotency_key="pay-1")["id"])
    assert len(set(ids)) == 1
    assert balances(conn, wallet_id)[0] == Decimal("7.00")


def test_same_transfer_key_racing_moves_money_once(conn, connect):
    a, b = open_wallet(conn, 1), open_wallet(conn, 2)
    post(conn, a, "100")

    def send(c, _):
        rows = c.execute("SELECT id FROM economy.transfer(%s, %s, 10, 'tx-1')", [a, b])
        return tuple(row[0] for row in rows)

    assert len(set(race(connect, send))) == 1
    assert balances(conn, a)[0] == Decimal("90.00")


def test_racing_reversals_reverse_once(conn, connect):
    wallet_id = open_wallet(conn, 1)
    entry = post(conn, wallet_id, "10")

    def reverse(c, _):
        try:
            c.execute("SELECT economy.reverse_transaction(%s)", [entry["id"]])
            return True
        except errors.UniqueViolation:
            return False

    assert sum(race(connect, reverse)) == 1
    assert balances(conn, wallet_id)[0] == Decimal("0.00")


def test_racing_open_wallet_returns_one_wallet(conn, connect):
    assert len(set(race(connect, lambda c, _: open_wallet(c, 77)))) == 1


def random_writer(wallets, operations, seed):
    """A writer doing credits, debits and transfers; returns the net amount it
    got acknowledged per wallet."""

    def work(c, number):
        rng = random.Random(seed + number)
        net = dict.fromkeys(wallets, Decimal(0))
        for _ in range(operations):
            a, b = rng.sample(wallets, 2)
            amount = Decimal(rng.randint(1, 500)) / 100
            try:
                match rng.choice(["credit", "debit", "transfer"]):
                    case "credit":
                        post(c, a, amount, kind=rng.choice(["prize", "refund"]))
                        net[a] += amount
                    case "debit":
                        post(c, a, -amount, kind="purchase")
                        net[a] -= amount
                    case "transfer":
                        c.execute("SELECT economy.transfer(%s, %s, %s)", [a, b, amount])
                        net[a] -= amount
                        net[b] += amount
            except errors.CheckViolation:  # overdraft: refused, nothing written
                pass
        return net

    return work


def reconcile_loop(dsn, stop, repairs):
    """Real reconcile runs, the ledger checkpoint advanced before each."""
    with psycopg.connect(dsn, autocommit=True) as c:
        while not stop.is_set():
            if advance_checkpoint(c) is None:  # writers never hold the ledger that long
                repairs.append("checkpoint skipped")
            repairs.extend(c.execute("SELECT * FROM economy.reconcile_economy(dry_run => false)"))


@pytest.fixture
def ten_funded_wallets(conn):
    wallets = [open_wallet(conn, user, overdraft_limit="20") for user in range(1, 11)]
    for wallet_id in wallets:
        post(conn, wallet_id, "100", kind="prize")
    return wallets


def run_writers_beside_reconcile(connect, dsn, wallets, clients=6, operations=60):
    stop, repairs = threading.Event(), []
    reconciler = threading.Thread(target=reconcile_loop, args=(dsn, stop, repairs))
    reconciler.start()
    try:
        nets = race(connect, random_writer(wallets, operations, seed=7), clients=clients)
    finally:
        stop.set()
        reconciler.join()
    return nets, repairs


def test_reconcile_looping_beside_writers_finds_nothing_to_fix(
    conn, connect, dsn, ten_funded_wallets
):
    nets, repairs = run_writers_beside_reconcile(connect, dsn, ten_funded_wallets)
    assert repairs == []
    assert conn.execute("SELECT count(*) FROM economy.reconcile_log").fetchone() == (0,)
    for wallet_id in ten_funded_wallets:
        expected = Decimal("100") + sum(net[wallet_id] for net in nets)
        assert balances(conn, wallet_id)[0] == expected
    assert drift(conn) == []


def test_drift_injected_with_triggers_off_is_repaired_while_writers_run(
    conn, connect, dsn, ten_funded_wallets
):
    drifted = ten_funded_wallets[:5]
    injected = dict.fromkeys(ten_funded_wallets, Decimal(0))
    for wallet_id in drifted:  # drift before the run ...
        load_without_sync(conn, wallet_id, "50", kind="reward")
        injected[wallet_id] += 50

    def inject_during_run():  # ... and during it
        with psycopg.connect(dsn, autocommit=True) as c:
            rng = random.Random(3)
            for _ in range(20):
                wallet_id = rng.choice(drifted)
                load_without_sync(c, wallet_id, "5", kind="reward")
                injected[wallet_id] += 5

    injector = threading.Thread(target=inject_during_run)
    injector.start()
    nets, repairs = run_writers_beside_reconcile(connect, dsn, ten_funded_wallets)
    injector.join()
    repairs += conn.execute("SELECT * FROM economy.reconcile_economy(dry_run => false)").fetchall()

    for wallet_id in ten_funded_wallets:
        expected = Decimal(100) + injected[wallet_id] + sum(net[wallet_id] for net in nets)
        assert balances(conn, wallet_id)[0] == expected  # nothing lost, nothing doubled
        # the repairs of this wallet add up to exactly what was loaded behind its back
        deltas = [r[4] - r[3] for r in repairs if r[1] == wallet_id and r[2] == "wallet.balance"]
        assert sum(deltas) == injected[wallet_id]
    assert conn.execute("SELECT count(*) FROM economy.reconcile_log").fetchone() == (len(repairs),)
    assert drift(conn) == []
