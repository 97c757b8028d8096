"""Multi-row writes to an attached ledger applied set-based, with no setting:
any INSERT or COPY of several rows updates each wallet and profile once (a
count, not a timing); the caches end where row-by-row sync would leave them,
nothing is applied twice or skipped, and racing statements in any order
neither deadlock nor lose money. `economy.sync = 'statement'`, once needed
for this, still works and changes nothing."""

import random
import threading

import pytest
from helpers import (
    SEED_ATTACH,
    SEED_PARTITIONED_LEDGER,
    SEED_TABLES,
    pay,
    rows_updated,
    run,
    seed_figures,
)
from helpers import attached_drift as drift
from psycopg import errors

from economy_sync import set_hot, wallet_balance

STATEMENT = "SET LOCAL economy.sync = 'statement'"
ROWS = "INSERT INTO app_transaction (wallet_id, amount, reason) VALUES "


@pytest.fixture
def seed(conn):
    """Profiles 1..3 with wallets 1..3 (profile 3 also owns wallet 5); wallet 4,
    the treasury, has no owner."""
    conn.execute(SEED_TABLES)
    conn.execute(SEED_ATTACH)
    conn.execute("INSERT INTO app_profile (username) VALUES ('ana'), ('bo'), ('cy')")
    conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1), (2), (3), (NULL), (3)")
    return conn


def statement_insert(conn, query, params=None):
    with conn.transaction():
        conn.execute(query, params)


def applied_once(conn):
    """{wallet: (balance, earnings)} as the ledger says: what the caches must be."""
    rows = conn.execute(
        "SELECT w.id, coalesce(sum(t.amount), 0)::integer,"
        " coalesce(sum(t.amount) FILTER (WHERE t.amount > 0), 0)::integer"
        " FROM app_wallet w LEFT JOIN app_transaction t ON t.wallet_id = w.id GROUP BY w.id"
    ).fetchall()
    return {w: (balance, earnings) for w, balance, earnings in rows}


def test_a_multi_row_insert_moves_each_cache_once_as_row_by_row_would(seed):
    rows = [(1, 100), (2, 40), (1, -30), (4, 7), (3, 5), (5, 6), (1, 2)]
    values = ", ".join(f"({w}, {a}, 'prize')" for w, a in rows)
    statement_insert(seed, ROWS + values)
    wallets, profiles = seed_figures(seed)
    assert wallets == {1: (72, 102), 2: (40, 40), 3: (5, 5), 4: (7, 7), 5: (6, 6)}
    assert profiles == {1: (72, 102), 2: (40, 40), 3: (11, 11)}
    assert wallets == applied_once(seed)
    assert drift(seed, "seed") == []
    # and the same rows once more, row by row, end in the same place twice over
    seed.execute(ROWS + values)
    assert seed_figures(seed)[0] == {w: (2 * b, 2 * e) for w, (b, e) in wallets.items()}


def test_copy_and_insert_select(seed):
    with (
        seed.transaction(),
        seed.cursor().copy("COPY app_transaction (wallet_id, amount, reason) FROM STDIN") as cp,
    ):
        for n in range(300):
            cp.write_row((1 + n % 5, 3 if n % 4 else -1, "prize"))
    statement_insert(
        seed,
        "INSERT INTO app_transaction (wallet_id, amount, reason)"
        " SELECT 1 + g % 5, g, 'prize' FROM generate_series(1, 200) g",
    )
    statement_insert(
        seed, "INSERT INTO app_transaction (wallet_id, amount, reason) SELECT 1, 1, 'x' WHERE false"
    )
    assert seed_figures(seed)[0] == applied_once(seed)
    assert drift(seed, "seed") == []


def test_earnings_follow_the_attachments_earning_expression(conn):
    conn.execute(SEED_TABLES)
    conn.execute(
        SEED_ATTACH.replace(
            "'lifetime_earnings')", "'lifetime_earnings', earning => 'reason = ''prize''')"
        )
    )
    conn.execute("INSERT INTO app_profile (username) VALUES ('ana')")
    conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")
    statement_insert(conn, ROWS + "(1, 10, 'prize'), (1, 4, 'refund'), (1, -3, 'prize')")
    assert seed_figures(conn) == ({1: (11, 7)}, {1: (11, 7)})
    assert drift(conn, "seed") == []


def test_a_result_that_does_not_fit_is_refused_whole(seed):
    pay(seed, 4, 2_000_000_000)
    before = seed_figures(seed)
    with pytest.raises(errors.NumericValueOutOfRange):
        statement_insert(
            seed, ROWS + "(1, 5, 'prize'), (4, 100000000, 'prize'), (4, 100000000, 'prize')"
        )
    assert seed_figures(seed) == before
    assert seed.execute("SELECT count(*) FROM app_transaction").fetchone() == (1,)


def test_updates_and_deletes_go_row_by_row(seed):
    pay(seed, 1, 50)
    pay(seed, 1, 5)
    seed.execute("UPDATE app_transaction SET amount = 20")
    seed.execute(ROWS + "(2, 9, 'prize'), (2, 1, 'prize')")
    seed.execute("DELETE FROM app_transaction WHERE wallet_id = 2")
    assert seed_figures(seed)[0][1] == (40, 40)
    assert seed_figures(seed)[0][2] == (0, 0)
    assert drift(seed, "seed") == []


@pytest.mark.parametrize("rows", [1, 2, 1000, 20_000])
def test_each_wallet_and_profile_is_written_once_per_statement(seed, rows):
    """Counted inside the transaction: a statement of any size writes each of
    its wallets and profiles once (so its cost is linear in its rows)."""
    written = rows_updated(
        seed,
        ["app_wallet", "app_profile"],
        lambda: seed.execute(
            "INSERT INTO app_transaction (wallet_id, amount, reason)"
            " SELECT 1 + g %% 3, 1, 'prize' FROM generate_series(0, %s - 1) g",
            [rows],
        ),
    )
    assert written == {"app_wallet": min(rows, 3), "app_profile": min(rows, 3)}
    assert seed_figures(seed)[0][1][0] == (rows + 2) // 3
    assert drift(seed, "seed") == []


def test_copy_writes_each_wallet_once(seed):
    def copy():
        with seed.cursor().copy(
            "COPY app_transaction (wallet_id, amount, reason) FROM STDIN"
        ) as cp:
            for n in range(5000):
                cp.write_row((1 + n % 5, 2, "prize"))

    # wallets 3 and 5 share profile 3
    assert rows_updated(seed, ["app_wallet", "app_profile"], copy) == {
        "app_wallet": 5,
        "app_profile": 3,
    }
    assert seed_figures(seed)[0] == applied_once(seed)
    assert drift(seed, "seed") == []


def test_each_debit_of_a_statement_is_checked_against_the_overdraft_limit_in_its_order(conn):
    conn.execute(SEED_TABLES)
    conn.execute(
        SEED_ATTACH.replace("'lifetime_earnings')", "'lifetime_earnings', overdraft_limit => '0')")
    )
    conn.execute("INSERT INTO app_profile (username) VALUES ('ana')")
    conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")
    pay(conn, 1, 5)
    # +10, -30, +40 ends at 25, but -30 takes the wallet to -15 on its way
    with pytest.raises(errors.CheckViolation, match="overdraft limit"):
        conn.execute(ROWS + "(1, 10, 'prize'), (1, -30, 'purchase'), (1, 40, 'prize')")
    conn.execute(ROWS + "(1, 40, 'prize'), (1, -30, 'purchase'), (1, 10, 'prize')")
    assert seed_figures(conn)[0] == {1: (25, 55)}
    assert drift(conn, "seed") == []


def test_the_old_setting_still_works_and_changes_nothing(seed):
    """`economy.sync = 'statement'` (once needed for set-based sync) is accepted
    and ignored: set, unset, or switched by the statement itself, each row
    counts once."""
    with seed.transaction():
        seed.execute(STATEMENT)
        seed.execute(ROWS + "(1, 10, 'prize'), (1, 10, 'prize')")
        seed.execute(ROWS + "(1, 10, 'prize')")
    for switch_to in ("statement", "row"):
        seed.execute(
            "INSERT INTO app_transaction (wallet_id, amount, reason)"
            " SELECT 1, 10, set_config('economy.sync', CASE WHEN g = 2 THEN %s ELSE"
            " coalesce(current_setting('economy.sync', true), 'row') END, false)::text"
            " FROM generate_series(1, 3) g",
            [switch_to],
        )
    assert seed_figures(seed)[0][1] == (90, 90)
    assert drift(seed, "seed") == []


def test_a_partitioned_ledger_syncs_every_row_however_it_is_written(conn):
    """A row trigger on a partitioned table cannot see the statement's rows, and
    a statement trigger of the parent misses rows written into a partition, or
    moved to another partition by an UPDATE: there every row is synced by the
    row trigger (one write per row, as before), whichever table it names."""
    conn.execute(SEED_TABLES[: SEED_TABLES.index("CREATE TABLE app_transaction")])
    conn.execute(SEED_PARTITIONED_LEDGER)
    conn.execute(
        SEED_ATTACH.replace("'lifetime_earnings')", "'lifetime_earnings', overdraft_limit => '0')")
    )
    conn.execute("INSERT INTO app_profile (username) VALUES ('ana'), ('bo')")
    conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1), (2), (1)")
    pay(conn, 1, 7)
    written = rows_updated(
        conn,
        ["app_wallet"],
        lambda: conn.execute(
            "INSERT INTO app_transaction (wallet_id, amount, reason)"
            " SELECT 1 + g % 3, 2, 'prize' FROM generate_series(0, 29) g"
        ),
    )
    assert written == {"app_wallet": 30}
    conn.execute(
        "INSERT INTO app_transaction_1 (wallet_id, amount, reason) VALUES (1, 100, 'prize')"
    )
    with conn.cursor().copy(
        "COPY app_transaction_rest (wallet_id, amount, reason) FROM STDIN"
    ) as cp:
        cp.write_row((2, 50, "prize"))
    conn.execute("UPDATE app_transaction SET wallet_id = 3 WHERE amount = 100")  # moves partition
    with pytest.raises(errors.CheckViolation, match="overdraft limit"):
        conn.execute(
            "INSERT INTO app_transaction_1 (wallet_id, amount, reason) VALUES (1, -500, 'x')"
        )
    assert seed_figures(conn) == (
        {1: (27, 27), 2: (70, 70), 3: (120, 120)},
        {1: (147, 147), 2: (70, 70)},
    )
    assert drift(conn, "seed") == []


def parked(conn):
    return conn.execute(
        "SELECT wallet_id, sum(credits), sum(amount) FROM economy.attached_hot_credit"
        " GROUP BY 1 HAVING sum(credits) > 0"
    ).fetchall()


def test_a_hot_wallet_only_credited_is_parked_and_one_also_debited_is_folded(seed):
    set_hot(seed, 4, attachment="seed")
    pay(seed, 4, 30)  # parked, row by row
    statement_insert(seed, ROWS + "(4, 5, 'fee'), (1, 1, 'prize'), (4, 6, 'fee')")
    assert parked(seed) == [(4, 2, 41)]  # one parked row for the statement
    assert seed_figures(seed)[0][4] == (0, 0)
    statement_insert(seed, ROWS + "(4, 5, 'fee'), (4, -2, 'payout')")
    assert parked(seed) == []
    assert seed_figures(seed)[0][4] == (44, 46)
    assert wallet_balance(seed, 4, attachment="seed") == 44
    assert drift(seed, "seed") == []


def test_statements_crediting_a_hot_wallet_do_not_wait_for_each_others_commit(seed, connect):
    set_hot(seed, 4, attachment="seed")
    first, second = connect(autocommit=False), connect(autocommit=False)
    first.execute(ROWS + "(4, 1, 'fee'), (4, 1, 'fee')")  # uncommitted
    second.execute("SET lock_timeout = '1s'")
    second.execute(ROWS + "(4, 2, 'fee'), (4, 2, 'fee')")  # would time out if it queued
    second.commit()
    first.commit()
    assert wallet_balance(seed, 4, attachment="seed") == 6
    assert drift(seed, "seed") == []


@pytest.fixture
def running(seed):
    """The seed's tables attached with balance_after, and an overdraft limit of 0
    on the owned wallets (the treasury, wallet 4, has none)."""
    seed.execute("SELECT economy.detach('seed')")
    seed.execute(
        SEED_ATTACH.replace(
            "profile_earnings_column => 'lifetime_earnings'",
            "profile_earnings_column => 'lifetime_earnings',"
            " balance_after_column => 'cached_balance_after',"
            " overdraft_limit => 'CASE WHEN profile_id IS NULL THEN NULL ELSE 0 END'",
        )
    )
    return seed


def afters(conn, wallet_id):
    return [
        row[0]
        for row in conn.execute(
            "SELECT cached_balance_after FROM app_transaction WHERE wallet_id = %s ORDER BY id",
            [wallet_id],
        )
    ]


def chained(conn, wallet):
    """Applied one after another (in whatever order their transactions got the
    wallet), each entry starts where the one before it ended: the balances
    before the entries, plus the final one, are those after them, plus 0."""
    rows = conn.execute(
        "SELECT amount, cached_balance_after FROM app_transaction WHERE wallet_id = %s",
        [wallet],
    ).fetchall()
    final = seed_figures(conn)[0][wallet][0]
    befores = sorted([after - amount for amount, after in rows] + [final])
    return befores == sorted([after for _, after in rows] + [0])


def test_balance_after_rows_of_a_statement_write_each_wallet_at_most_twice(running):
    """Each row gets its wallet's running balance, in the order of the rows; the
    statement writes each wallet and profile row once, however many rows."""
    rows = [(1, 5), (2, 3), (1, -2)] * 200 + [(4, -7)]
    values = ", ".join(f"({w}, {a}, 'prize')" for w, a in rows)
    written = rows_updated(
        running, ["app_wallet", "app_profile"], lambda: running.execute(ROWS + values)
    )
    assert written == {"app_wallet": 3, "app_profile": 2}
    assert afters(running, 1) == [
        5 + 3 * i + (0 if j == 0 else -2) for i in range(200) for j in (0, 1)
    ]
    assert afters(running, 2) == [3 * (i + 1) for i in range(200)]
    assert afters(running, 4) == [-7]
    assert seed_figures(running)[0] == {
        1: (600, 1000),
        2: (600, 600),
        3: (0, 0),
        4: (-7, 0),
        5: (0, 0),
    }
    assert drift(running, "seed") == []
    running.execute(ROWS + "(1, 1, 'prize')")  # a single row, the next statement
    assert afters(running, 1)[-1] == 601
    assert drift(running, "seed") == []


def test_every_row_of_a_statement_meets_the_overdraft_limit(running):
    with pytest.raises(errors.CheckViolation, match="overdraft"):
        statement_insert(running, ROWS + "(1, 10, 'prize'), (1, -20, 'purchase'), (1, 15, 'prize')")
    assert afters(running, 1) == []
    statement_insert(running, ROWS + "(1, 10, 'prize'), (1, -10, 'purchase'), (1, 15, 'prize')")
    assert afters(running, 1) == [10, 0, 15]


@pytest.mark.parametrize("when", ["before", "during"])
def test_a_forged_running_balance_is_refused(running, when):
    """The running balances live in settings any role can change: a statement
    whose rows do not add up from the wallet (read under its lock) is refused,
    nothing written, before the statement or by a row of it."""
    forge = "set_config('economy.running_seed_1', ',1:1000000,', true)"
    refused = pytest.raises(errors.CheckViolation, match="not its running balance")
    with refused, running.transaction():
        if when == "before":
            running.execute(f"SELECT {forge}")
            running.execute(ROWS + "(1, -500, 'purchase'), (1, 1, 'prize')")
        else:
            running.execute(
                "INSERT INTO app_transaction (wallet_id, amount, reason)"
                f" SELECT 1, a, CASE WHEN {forge} IS NULL THEN 'x' ELSE 'purchase' END"
                " FROM unnest(ARRAY[1, -500]) a"
            )
    assert afters(running, 1) == []
    assert drift(running, "seed") == []


def test_a_row_skipped_by_on_conflict(running):
    """Alone in its statement, a skipped row leaves nothing behind; followed by
    another row of its wallet, whose running balance counted it, it is refused."""
    running.execute("CREATE UNIQUE INDEX ON app_transaction (reason) WHERE reason LIKE 'key-%%'")
    upsert = (
        "INSERT INTO app_transaction (wallet_id, amount, reason) VALUES {} ON CONFLICT DO NOTHING"
    )
    running.execute(upsert.format("(1, 5, 'key-1')"))
    running.execute(upsert.format("(1, 5, 'key-1')"))  # skipped
    running.execute(ROWS + "(1, 1, 'prize')")
    assert afters(running, 1) == [5, 6]
    with pytest.raises(errors.CheckViolation, match="not its running balance"):
        statement_insert(running, upsert.format("(1, 5, 'key-1'), (1, 2, 'key-2')"))
    assert afters(running, 1) == [5, 6]
    assert drift(running, "seed") == []


def test_credits_to_a_hot_wallet_in_a_balance_after_statement_are_parked(running):
    set_hot(running, 4, attachment="seed")
    statement_insert(running, ROWS + "(4, 5, 'fee'), (1, 9, 'prize'), (4, 6, 'fee')")
    assert afters(running, 4) == [None, None]  # parked: no place in the order
    assert wallet_balance(running, 4, attachment="seed") == 11
    statement_insert(running, ROWS + "(4, 2, 'fee'), (4, -3, 'refund'), (4, 1, 'fee')")
    assert afters(running, 4) == [None, None, None, 8, None]  # the debit folded first
    assert wallet_balance(running, 4, attachment="seed") == 11
    assert drift(running, "seed") == []


def test_the_app_role_writes_statements(seed, login):
    seed.execute("GRANT INSERT, SELECT ON app_transaction TO economy_app")
    seed.execute("GRANT USAGE ON SEQUENCE app_transaction_id_seq TO economy_app")
    app = login("economy_app")
    statement_insert(app, ROWS + "(1, 8, 'prize'), (2, 9, 'prize')")
    wallets = seed_figures(seed)[0]
    assert (wallets[1], wallets[2]) == ((8, 8), (9, 9))
    assert drift(seed, "seed") == []


def test_doctor_finds_a_disabled_statement_trigger(seed, dsn):
    seed.execute("ALTER TABLE app_transaction DISABLE TRIGGER economy_seed_sync_rows")
    result = run("doctor", "--attachment", "seed", dsn=dsn)
    assert result.returncode == 1
    assert "PROBLEM trigger economy_seed_sync_rows is disabled" in result.stdout
    seed.execute("ALTER TABLE app_transaction ENABLE TRIGGER economy_seed_sync_rows")
    assert run("doctor", "--attachment", "seed", dsn=dsn).returncode == 0


def test_detach_removes_the_statement_trigger(seed):
    seed.execute("SELECT economy.detach('seed')")
    assert seed.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'economy\\_%%'"
        " UNION ALL SELECT count(*) FROM pg_proc WHERE proname LIKE 'attached\\_seed\\_%%'"
    ).fetchall() == [(0,), (0,)]


def test_racing_statements_row_writers_and_a_folding_treasury_conserve_money(seed, connect):
    """Statements over random wallets in random order, single rows and hot-wallet
    folds race; no deadlock, and every cache equals its ledger."""
    set_hot(seed, 4, attachment="seed")
    failures = []

    def statements(number):
        c, rng = connect(), random.Random(number)
        try:
            for _ in range(25):
                rows = [(rng.randint(1, 5), rng.randint(-5, 20)) for _ in range(20)]
                statement_insert(c, ROWS + ", ".join(f"({w}, {a}, 'prize')" for w, a in rows))
        except Exception as error:  # reported below, with the others
            failures.append(error)

    def singles(number):
        c, rng = connect(), random.Random(100 + number)
        try:
            for _ in range(60):
                with c.transaction():
                    pay(c, rng.randint(1, 5), rng.randint(-5, 20))
                    pay(c, 4, 1, "fee")
        except Exception as error:
            failures.append(error)

    def folds():
        c = connect()
        for _ in range(30):
            c.execute("SELECT economy.fold_hot_wallets(attachment => 'seed')")

    threads = [threading.Thread(target=statements, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=singles, args=(n,)) for n in range(2)]
    threads.append(threading.Thread(target=folds))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [], "\n".join(map(str, failures))
    seed.execute("SELECT economy.fold_hot_wallets(attachment => 'seed')")
    assert seed_figures(seed)[0] == applied_once(seed)
    assert drift(seed, "seed") == []


def test_racing_balance_after_statements_singles_folds_and_reconciles(running, connect):
    """Statements (their rows sorted by wallet: with balance_after a statement
    locks its wallets as its rows come), single rows, a folding treasury and
    real reconciles race; no deadlock, every cache equals its ledger, and each
    wallet's entries form one running sum in the order they were applied."""
    set_hot(running, 4, attachment="seed")
    running.execute("ALTER TABLE app_wallet DISABLE TRIGGER USER")  # no limit in this race
    running.execute("UPDATE app_wallet SET cached_balance = 0")
    running.execute("ALTER TABLE app_wallet ENABLE TRIGGER USER")
    running.execute("SELECT economy.detach('seed')")
    running.execute(
        SEED_ATTACH.replace(
            "profile_earnings_column => 'lifetime_earnings'",
            "profile_earnings_column => 'lifetime_earnings',"
            " balance_after_column => 'cached_balance_after'",
        )
    )
    set_hot(running, 4, attachment="seed")
    failures = []

    def guarded(work):
        def run_it(number):
            try:
                work(connect(), random.Random(number))
            except Exception as error:  # reported below, with the others
                failures.append(error)

        return run_it

    @guarded
    def statements(c, rng):
        for _ in range(25):
            rows = sorted((rng.randint(1, 5), rng.randint(-5, 20)) for _ in range(20))
            statement_insert(c, ROWS + ", ".join(f"({w}, {a}, 'prize')" for w, a in rows))

    @guarded
    def singles(c, rng):
        for _ in range(60):
            with c.transaction():
                pay(c, rng.randint(1, 5), rng.randint(-5, 20))
                pay(c, 4, 1, "fee")

    @guarded
    def maintenance(c, rng):
        for _ in range(15):
            c.execute("SELECT economy.fold_hot_wallets(attachment => 'seed')")
            c.execute("SELECT count(*) FROM economy.reconcile_economy(false, attachment => 'seed')")

    threads = [threading.Thread(target=statements, args=(n,)) for n in range(3)]
    threads += [threading.Thread(target=singles, args=(10 + n,)) for n in range(2)]
    threads.append(threading.Thread(target=maintenance, args=(20,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [], "\n".join(map(str, failures))
    running.execute("SELECT economy.fold_hot_wallets(attachment => 'seed')")
    assert seed_figures(running)[0] == applied_once(running)
    assert drift(running, "seed") == []
    for wallet in (1, 2, 3, 5):
        assert chained(running, wallet), wallet
