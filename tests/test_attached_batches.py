"""Multi-row writes to an attached ledger applied set-based: an INSERT or COPY
made with `SET LOCAL economy.sync = 'statement'` updates each wallet and
profile once; the caches end where row-by-row sync would leave them, nothing
is applied twice or skipped, and racing statements neither deadlock nor lose
money."""

import random
import threading

import pytest
from helpers import SEED_ATTACH, SEED_TABLES, pay, run, seed_figures
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
        conn.execute(STATEMENT)
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
    with seed.transaction():
        seed.execute(STATEMENT)
        with seed.cursor().copy(
            "COPY app_transaction (wallet_id, amount, reason) FROM STDIN"
        ) as cp:
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


def test_the_setting_is_for_inserts_only(seed):
    pay(seed, 1, 50)
    with seed.transaction():
        seed.execute(STATEMENT)
        seed.execute("UPDATE app_transaction SET amount = 20")
        seed.execute(ROWS + "(2, 9, 'prize')")
        seed.execute("DELETE FROM app_transaction WHERE wallet_id = 2")
    assert seed_figures(seed)[0][1] == (20, 20)
    assert seed_figures(seed)[0][2] == (0, 0)
    assert drift(seed, "seed") == []


def test_changing_the_setting_inside_a_statement_applies_each_row_once(seed):
    """The setting is read when the triggers fire, at the end of the statement:
    switched on or off by the statement itself, each row still counts once."""
    for switch_to in ("statement", "row"):
        seed.execute(
            "INSERT INTO app_transaction (wallet_id, amount, reason)"
            " SELECT 1, 10, set_config('economy.sync', CASE WHEN g = 2 THEN %s ELSE"
            " coalesce(current_setting('economy.sync', true), 'row') END, false)::text"
            " FROM generate_series(1, 3) g",
            [switch_to],
        )
    assert seed_figures(seed)[0][1] == (60, 60)
    # switched after the rows are in, before the triggers fire (a writable CTE)
    for switch_to in ("statement", "row"):
        seed.execute(
            "WITH x AS (INSERT INTO app_transaction (wallet_id, amount, reason)"
            " VALUES (1, 10, 'prize'), (1, 10, 'prize') RETURNING amount)"
            " SELECT set_config('economy.sync', %s, false) FROM (SELECT count(*) FROM x) c",
            [switch_to],
        )
    assert seed_figures(seed)[0][1] == (100, 100)
    assert drift(seed, "seed") == []


def parked(conn):
    return conn.execute(
        "SELECT wallet_id, count(*), sum(amount) FROM economy.attached_hot_credit GROUP BY 1"
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
    first.execute(STATEMENT)
    first.execute(ROWS + "(4, 1, 'fee'), (4, 1, 'fee')")  # uncommitted
    second.execute("SET lock_timeout = '1s'")
    second.execute(STATEMENT)
    second.execute(ROWS + "(4, 2, 'fee'), (4, 2, 'fee')")  # would time out if it queued
    second.commit()
    first.commit()
    assert wallet_balance(seed, 4, attachment="seed") == 6
    assert drift(seed, "seed") == []


def test_an_attachment_with_balance_after_syncs_row_by_row_whatever_the_setting(conn):
    conn.execute(SEED_TABLES)
    conn.execute(
        "SELECT economy.attach('seed', 'app_transaction', 'app_wallet',"
        " wallet_balance_column => 'cached_balance',"
        " balance_after_column => 'cached_balance_after')"
    )
    conn.execute("INSERT INTO app_wallet (profile_id) VALUES (NULL)")
    statement_insert(conn, ROWS + "(1, 100, 'prize'), (1, -30, 'purchase')")
    assert conn.execute(
        "SELECT cached_balance_after FROM app_transaction ORDER BY id"
    ).fetchall() == [(100,), (70,)]
    assert drift(conn, "seed") == []


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
