"""Multi-row writes to an attachment that records balance_after, attacked: the
owner's triggers around the sync rewriting rows, forged settings, writable CTEs,
nested inserts, COPY, ON CONFLICT, savepoints, cursors, amounts that do not fit,
hot wallets and racing connections at every isolation level. Known gaps are
strict xfails, named in docs/DESIGN.md."""

import contextlib

import pytest
from helpers import attached_drift as drift
from helpers import pay, seed_figures
from psycopg import errors
from test_attached_batches import ROWS, afters, applied_once, chained, running, seed  # noqa: F401

# the known gaps, each a strict xfail (docs/DESIGN.md)
APPLIED_AT_END = (
    "known, not fixed yet: rows are applied at the end of their statement, while the "
    "insert guards and the move of a wallet sum the ledger, which already holds them"
)
WALLET_MADE_LATER = (
    "known, not fixed yet: a row whose wallet is made later in the transaction "
    "(deferred foreign key) reaches the wallet through its insert guard, never the "
    "profile"
)
HOT_CREDIT_THEN_DEBIT = (
    "known, not fixed yet (balance_after): a hot wallet's credits are parked at the "
    "end of their statement, so a later debit of the same statement does not count "
    "them"
)
NESTED_ROW = (
    "known, not fixed yet (balance_after): a ledger row written by a trigger while "
    "the statement runs, for a wallet the statement writes, is refused (its running "
    "balance cannot be checked)"
)


def consistent(conn):
    """Caches equal the ledger; each plain wallet's balance_after values chain."""
    assert drift(conn, "seed") == []
    assert seed_figures(conn)[0] == applied_once(conn)


def test_running_mode_is_on(running):  # noqa: F811
    assert running.execute(
        "SELECT economy.insert_sync(a) FROM economy.attachments a WHERE a.name = 'seed'"
    ).fetchone() == ("running",)


# --- 1. the owner's own BEFORE trigger, after economy_seed_sync: the overdraft
# limit is checked only by the row trigger, on the row as it was then

REWRITE = """
CREATE FUNCTION zz_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.reason = 'sneak' THEN
        -- keep balance_after consistent with the new amount
        NEW.cached_balance_after := NEW.cached_balance_after - NEW.amount - 1000;
        NEW.amount := -1000;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER zz_rewrite BEFORE INSERT ON app_transaction
FOR EACH ROW EXECUTE FUNCTION zz_rewrite();
"""


@pytest.mark.parametrize("rows", [1, 2])
def test_owner_trigger_after_the_sync_rewrites_amount_past_the_overdraft_limit(
    running,  # noqa: F811
    rows,
):
    """Wallet 1 has an overdraft limit of 0. The owner's BEFORE trigger (named
    after economy_seed_sync, so it runs after it) turns a credit of 1 into a
    debit of 1000 and fixes balance_after: the statement trigger finds every
    row adding up and applies it; no overdraft check ever sees -1000."""
    running.execute(REWRITE)
    values = ", ".join(["(1, 1, 'sneak')"] + ["(2, 1, 'prize')"] * (rows - 1))
    with contextlib.suppress(errors.CheckViolation):  # refused: the contract held
        running.execute(ROWS + values)
    balance = seed_figures(running)[0][1][0]
    consistent(running)
    assert balance >= 0, f"wallet 1 (overdraft limit 0) is at {balance}"


def test_owner_trigger_fixes_balance_after_of_a_forged_setting(running):  # noqa: F811
    """A forged running balance passes the row's overdraft check; the owner's
    later BEFORE trigger puts the true running balance back, so the end check
    passes: a debit below the limit is applied."""
    running.execute("""
        CREATE FUNCTION zz_fix() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.cached_balance_after := (SELECT cached_balance FROM app_wallet
                WHERE id = NEW.wallet_id) + NEW.amount;
            RETURN NEW;
        END;
        $$;
        CREATE TRIGGER zz_fix BEFORE INSERT ON app_transaction
        FOR EACH ROW EXECUTE FUNCTION zz_fix();
    """)
    try:
        with running.transaction():
            running.execute("SELECT set_config('economy.running_seed_1', ',1:1000000,', true)")
            running.execute(ROWS + "(1, -500, 'purchase')")
    except errors.CheckViolation:
        pass
    balance = seed_figures(running)[0][1][0]
    consistent(running)
    assert balance >= 0, f"wallet 1 (overdraft limit 0) is at {balance}"


# --- 2. the statement's rows are applied at its end; code of the sync that
# reads the ledger in between (a new wallet's or profile's guard, a wallet's
# move to another owner) sees rows not applied yet


@pytest.fixture(params=["running", "seed"])
def either(request):
    """The same attack on a balance_after attachment (the new 'running' sync)
    and on a plain one (row or statement, as before the feature)."""
    return request.getfixturevalue(request.param), request.param


@pytest.mark.xfail(reason=APPLIED_AT_END)
def test_a_wallet_created_by_the_same_statement_after_its_row(either):
    """A row for wallet 99, not there yet (its foreign key is deferred); an
    unreferenced writable CTE creates wallet 99 after the row: the wallet's
    guard takes its figures from the ledger, which holds the row already, then
    the statement's end adds the row again."""
    conn, name = either
    supplied = ", 20" if name == "running" else ", NULL"
    try:
        with conn.transaction():
            conn.execute(
                "WITH nw AS (INSERT INTO app_wallet (id, profile_id) VALUES (99, 1) RETURNING id)"
                " INSERT INTO app_transaction (wallet_id, amount, reason, cached_balance_after)"
                f" VALUES (99, 10, 'x'{supplied})"
            )
    except errors.CheckViolation:
        pass
    consistent(conn)


@pytest.mark.xfail(
    strict=True,
    reason=APPLIED_AT_END,
)
def test_a_profile_created_by_the_same_statement_after_its_row(either):
    conn, _ = either
    try:
        with conn.transaction():
            conn.execute("INSERT INTO app_wallet (id, profile_id) VALUES (50, 7)")  # deferred FK
            conn.execute(
                "WITH np AS (INSERT INTO app_profile (id, username) VALUES (7, 'x') RETURNING id)"
                " INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (50, 10, 'x')"
            )
    except errors.CheckViolation:
        pass
    consistent(conn)


@pytest.mark.xfail(
    strict=True,
    reason=APPLIED_AT_END,
)
@pytest.mark.parametrize("referenced", [False, True])
def test_a_wallet_moved_to_another_owner_by_the_same_statement(either, referenced):
    """Wallet 1 (profile 1) gets a row while a writable CTE gives it to profile
    2: the move takes the wallet's ledger (the new row included) from profile 1
    to profile 2, and the statement's end adds the row to profile 2 again."""
    conn, _ = either
    pay(conn, 1, 5)
    source = "SELECT id, 10, 'x' FROM mv" if referenced else "VALUES (1, 10, 'x')"
    with contextlib.suppress(errors.CheckViolation):
        conn.execute(
            "WITH mv AS (UPDATE app_wallet SET profile_id = 2 WHERE id = 1 RETURNING id)"
            " INSERT INTO app_transaction (wallet_id, amount, reason) " + source
        )
    consistent(conn)


@pytest.mark.xfail(
    strict=True,
    reason=WALLET_MADE_LATER,
)
def test_a_row_for_a_wallet_made_later_in_the_transaction(either):
    """The foreign key is deferred: a row for wallet 99, then wallet 99 made
    (owned by profile 1) before commit. The wallet's guard gives it the
    ledger's figures; profile 1 never gets them."""
    conn, _ = either
    with conn.transaction():
        conn.execute(ROWS + "(99, 10, 'prize')")
        conn.execute("INSERT INTO app_wallet (id, profile_id) VALUES (99, 1)")
    consistent(conn)


def test_a_row_for_a_wallet_that_does_not_exist_yet_keeps_a_supplied_balance_after(
    running,  # noqa: F811
):
    """Same, on the running sync: the row keeps the balance_after its writer
    supplied (the row trigger returns NEW as it came: "its foreign key refuses
    the row", but the key is deferred), and the debit met no overdraft check."""
    with running.transaction():
        running.execute(
            "INSERT INTO app_transaction (wallet_id, amount, reason, cached_balance_after)"
            " VALUES (99, -1000, 'purchase', 777)"
        )
        running.execute("INSERT INTO app_wallet (id, profile_id) VALUES (99, NULL)")
    assert afters(running, 99) in ([None], [-1000]), afters(running, 99)


# --- 3. what should hold: statement shapes, settings, savepoints, cursors


def all_chained(conn):
    consistent(conn)
    for wallet in (1, 2, 3, 5):
        assert chained(conn, wallet), (wallet, afters(conn, wallet))


def attempt(conn, *statements):
    try:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
    except errors.DatabaseError:  # refused: the attacker's own statement fails
        return False
    return True


def test_writable_ctes_insert_into_the_ledger_twice_interleaved(running):  # noqa: F811
    pay(running, 1, 50)
    assert attempt(
        running,
        "WITH a AS (INSERT INTO app_transaction (wallet_id, amount, reason)"
        " SELECT 1 + g % 2, 10 * g, 'a' FROM generate_series(1, 4) g RETURNING wallet_id, amount)"
        " INSERT INTO app_transaction (wallet_id, amount, reason)"
        " SELECT wallet_id, -amount + 1, 'b' FROM a",
    )
    assert attempt(
        running,
        "WITH a AS (INSERT INTO app_transaction (wallet_id, amount, reason)"
        " VALUES (2, 3, 'a'), (1, -7, 'a')),"
        " b AS (INSERT INTO app_transaction (wallet_id, amount, reason)"
        " VALUES (1, -2, 'b'), (2, -1, 'b'))"
        " INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (1, 4, 'c')",
    )
    # a debit below the limit between the CTE's rows: refused whole
    assert not attempt(
        running,
        "WITH a AS (INSERT INTO app_transaction (wallet_id, amount, reason)"
        " SELECT 1, amount, 'a' FROM unnest(ARRAY[-50, 100]) amount RETURNING amount)"
        " INSERT INTO app_transaction (wallet_id, amount, reason)"
        " SELECT 1, -amount, 'b' FROM a",
    )
    all_chained(running)


def test_a_nested_insert_in_the_statements_select(running):  # noqa: F811
    """INSERT … SELECT calling a function that inserts into the ledger: the
    nested statement's end empties the outer statement's running balances."""
    running.execute("""
        CREATE FUNCTION nested(w integer, a integer) RETURNS text LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (w, a, 'nested');
            RETURN 'outer';
        END;
        $$;
    """)
    pay(running, 1, 100)
    pay(running, 2, 100)
    for outer, inner in [(1, 2), (1, 1), (2, 1)]:
        for amounts in [(5, -5), (-30, 10), (10, -30)]:
            attempt(
                running,
                "INSERT INTO app_transaction (wallet_id, amount, reason)"
                f" SELECT {outer}, a, nested({inner}, a) FROM unnest(ARRAY{list(amounts)}) a",
            )
            attempt(
                running,
                "INSERT INTO app_transaction (wallet_id, amount, reason)"
                f" SELECT {outer}, a, CASE WHEN a < 0 THEN nested({inner}, 3) ELSE 'x' END"
                f" FROM unnest(ARRAY{list(amounts) * 2}) a",
            )
    all_chained(running)


def test_copy_checks_each_row_in_its_order(running):  # noqa: F811
    def copy(rows):
        with (
            running.transaction(),
            running.cursor().copy(
                "COPY app_transaction (wallet_id, amount, reason) FROM STDIN"
            ) as cp,
        ):
            for row in rows:
                cp.write_row(row)

    copy([(1, 10, "a"), (2, 5, "a"), (1, -10, "b"), (1, 3, "c")])
    with pytest.raises(errors.CheckViolation, match="overdraft"):
        copy([(1, 10, "a"), (1, -20, "b"), (1, 30, "c")])
    # balance_after supplied by COPY is overwritten
    with (
        running.transaction(),
        running.cursor().copy(
            "COPY app_transaction (wallet_id, amount, reason, cached_balance_after) FROM STDIN"
        ) as cp,
    ):
        cp.write_row((1, 1, "a", 999))
        cp.write_row((1, 1, "a", 999))
    assert afters(running, 1) == [10, 0, 3, 4, 5]
    all_chained(running)


@pytest.mark.parametrize(
    "forge",
    [
        "SET LOCAL economy.running_seed = ',1,2,x y,'",
        "SET LOCAL economy.running_seed = ''",
        "SELECT set_config('economy.running_seed_1', ',1:0,1:50,', true)",
        "SELECT set_config('economy.running_seed_1', ',65:0,1:5:6,', true)",
        "SELECT set_config('economy.running_seed_2', ',2:0,', true)",
    ],
)
def test_forged_settings_before_the_statement(running, forge):  # noqa: F811
    pay(running, 1, 5)
    pay(running, 2, 7)
    attempt(running, forge, ROWS + "(1, -5, 'a'), (2, -7, 'a'), (1, 2, 'b')")
    attempt(running, forge, ROWS + "(2, -3, 'a')")
    attempt(running, forge, ROWS + "(1, 4, 'a')", ROWS + "(1, -9, 'a')")
    all_chained(running)


def test_the_index_setting_emptied_mid_statement_leaves_stale_balances(running):  # noqa: F811
    """A row of the statement empties 'economy.running_seed': its end empties
    nothing, the next statement of the transaction starts from the stale
    balance; a DELETE (row sync) in between moved the wallet."""
    pay(running, 1, 50)
    ok = attempt(
        running,
        "INSERT INTO app_transaction (wallet_id, amount, reason)"
        " SELECT 1, a, CASE WHEN set_config('economy.running_seed', '', true) = '' THEN 'x' END"
        " FROM unnest(ARRAY[5, 6]) a",
        "DELETE FROM app_transaction WHERE amount = 50",
        ROWS + "(1, -11, 'purchase')",
    )
    assert not ok or afters(running, 1) == [55, 61, 0]
    consistent(running)


def test_on_conflict_do_update_of_an_older_row_mid_statement(running):  # noqa: F811
    running.execute("CREATE UNIQUE INDEX ON app_transaction (reason) WHERE reason LIKE 'key-%%'")
    running.execute(ROWS + "(1, 5, 'key-1'), (1, 20, 'other')")
    upsert = (
        "INSERT INTO app_transaction (wallet_id, amount, reason) VALUES {}"
        " ON CONFLICT (reason) WHERE reason LIKE 'key-%%'"
        " DO UPDATE SET amount = app_transaction.amount + excluded.amount"
    )
    # skipped row counted (+7) in the settings, the update moves the wallet by +7
    attempt(running, upsert.format("(1, 7, 'key-1'), (1, -30, 'key-2')"))
    attempt(running, upsert.format("(1, -25, 'key-1'), (1, 1, 'key-3')"))
    attempt(running, upsert.format("(1, 3, 'key-4'), (1, -35, 'key-1'), (1, 1, 'key-5')"))
    consistent(running)
    assert seed_figures(running)[0][1][0] >= 0


def test_savepoints(running):  # noqa: F811
    with running.transaction():
        running.execute(ROWS + "(1, 10, 'a')")
        running.execute("SAVEPOINT s")
        running.execute(ROWS + "(1, 5, 'b'), (1, -3, 'c')")
        running.execute("ROLLBACK TO SAVEPOINT s")
        running.execute("SAVEPOINT t")
        with pytest.raises(errors.CheckViolation):
            running.execute(ROWS + "(1, 1, 'b'), (1, -30, 'c')")
        running.execute("ROLLBACK TO SAVEPOINT t")
        running.execute(ROWS + "(1, -10, 'd'), (1, 2, 'e')")
        # a nested insert caught by an exception block
        running.execute("""
            DO $$
            BEGIN
                INSERT INTO app_transaction (wallet_id, amount, reason)
                VALUES (1, 3, 'f'), (1, -1, 'f');
                BEGIN
                    INSERT INTO app_transaction (wallet_id, amount, reason)
                    VALUES (1, 40, 'g'), (1, -100, 'g');
                EXCEPTION WHEN check_violation THEN NULL;
                END;
                INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (1, -4, 'h');
            END;
            $$
        """)
    assert afters(running, 1) == [10, 0, 2, 5, 4, 0]
    all_chained(running)


def test_cursors(running):  # noqa: F811
    running.execute("""
        CREATE FUNCTION ins(w integer, a integer) RETURNS integer LANGUAGE sql AS $$
            INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (w, a, 'cur')
            RETURNING cached_balance_after
        $$;
    """)
    with running.transaction():
        running.execute(
            "DECLARE c CURSOR FOR SELECT ins(1 + g % 2, CASE WHEN g % 3 = 0 THEN -2 ELSE 5 END)"
            " FROM generate_series(1, 12) g"
        )
        running.execute("FETCH 3 FROM c")
        running.execute(ROWS + "(1, -4, 'x'), (2, 1, 'y')")
        running.execute("FETCH 4 FROM c")
        running.execute(ROWS + "(2, -3, 'x'), (1, 2, 'y')")
        running.execute("FETCH ALL FROM c")
        running.execute("CLOSE c")
    all_chained(running)


@pytest.mark.parametrize(
    "rows",
    [
        "(4, 2147483000, 'a'), (4, -2147483000, 'b')",
        "(4, 2147483000, 'a'), (4, 1000, 'b'), (4, -5000, 'c')",
        "(1, 5, 'a'), (1, 2147483647, 'b')",
    ],
)
def test_amounts_that_do_not_fit(running, rows):  # noqa: F811
    pay(running, 4, 1000)
    attempt(running, ROWS + rows)
    consistent(running)


def test_hot_wallet_credits_that_do_not_fit_once_parked(running):  # noqa: F811
    from economy_sync import set_hot

    set_hot(running, 4, attachment="seed")
    pay(running, 4, -5)
    attempt(running, ROWS + "(4, 2147483000, 'a'), (4, 1000, 'b')")
    attempt(running, ROWS + "(4, 2147483000, 'a'), (1, 1, 'b')")
    attempt(running, ROWS + "(4, 2000000000, 'a'), (4, -5, 'b'), (4, 2000000000, 'c')")
    running.execute("SELECT economy.fold_hot_wallets(attachment => 'seed')")
    consistent(running)


# --- 4. real connections racing

RACE_OK = (
    errors.DeadlockDetected,
    errors.SerializationFailure,
    errors.CheckViolation,
    errors.LockNotAvailable,
)


def test_racing_statements_in_opposite_orders_isolation_levels_hot_wallets_and_folds(
    running,  # noqa: F811
    connect,
):
    """Statements whose rows come in random (and opposite) wallet orders, in READ
    COMMITTED, REPEATABLE READ and SERIALIZABLE, some with forged settings, race
    single rows, folds and set_hot on a wallet with an overdraft limit.
    Deadlocks and serialization failures are fine; wrong caches, a broken
    running sum or a balance below the limit are not."""
    import random
    import threading

    from economy_sync import set_hot

    set_hot(running, 4, attachment="seed")
    for wallet in (1, 2, 3, 5):
        pay(running, wallet, 60)
    failures, refused = [], []
    levels = ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]

    def worker(number):
        c, rng = connect(), random.Random(number)
        for _ in range(12):
            rows = [(rng.choice([1, 2, 3, 4, 5]), rng.randint(-15, 20)) for _ in range(6)]
            if number % 2:
                rows.sort(reverse=True)
            try:
                with c.transaction():
                    c.execute(f"SET TRANSACTION ISOLATION LEVEL {rng.choice(levels)}")
                    if rng.random() < 0.2:
                        w = rng.choice([1, 2, 3, 5])
                        true = c.execute(
                            "SELECT cached_balance FROM app_wallet WHERE id = %s", [w]
                        ).fetchone()[0]
                        c.execute(
                            "SELECT set_config(%s, %s, true)",
                            [f"economy.running_seed_{w}", f",{w}:{true},"],
                        )
                    c.execute(ROWS + ", ".join(f"({w}, {a}, 'r')" for w, a in rows))
                    if rng.random() < 0.3:
                        c.execute(ROWS + f"({rng.choice([1, 4])}, {rng.randint(-5, 9)}, 's')")
            except RACE_OK as error:
                refused.append(str(error).split(":")[0][:60])
            except Exception as error:  # reported below
                failures.append(repr(error))

    def maintenance():
        c, _rng = connect(), random.Random(99)
        for n in range(20):
            try:
                c.execute("SELECT economy.fold_hot_wallets(attachment => 'seed')")
                set_hot(c, 1, n % 2 == 0, attachment="seed")
            except RACE_OK as error:
                refused.append(type(error).__name__)
            except Exception as error:
                failures.append(repr(error))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    threads.append(threading.Thread(target=maintenance))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [], "\n".join(failures)
    set_hot(running, 1, False, attachment="seed")
    running.execute("SELECT economy.fold_hot_wallets(attachment => 'seed')")
    consistent(running)
    for wallet in (2, 3, 5):
        assert chained(running, wallet), wallet
    assert running.execute(
        "SELECT count(*) FROM app_transaction WHERE wallet_id <> 4 AND cached_balance_after < 0"
    ).fetchone() == (0,)
    assert all(seed_figures(running)[0][w][0] >= 0 for w in (1, 2, 3, 5))
    from collections import Counter

    print(Counter(refused))


# --- 5. refusals the row-by-row sync did not make (availability, not caches)
@pytest.mark.xfail(
    strict=True,
    reason=HOT_CREDIT_THEN_DEBIT,
)
def test_a_hot_wallets_credit_then_debit_in_one_statement(running):  # noqa: F811
    """Wallet 1 (overdraft limit 0) is hot: a credit of 10 then a debit of 5 in
    one statement; row by row (two statements) the debit folds the credit and
    passes. In one statement the credit is parked only at the end, so the
    debit is checked (and its balance_after given) without it."""
    from economy_sync import set_hot

    set_hot(running, 1, attachment="seed")
    ok = attempt(running, ROWS + "(1, 10, 'prize'), (1, -5, 'purchase')")
    running.execute("SELECT economy.fold_hot_wallets(attachment => 'seed')")
    consistent(running)
    assert ok, "refused: the statement's own earlier credit is not counted"


@pytest.mark.xfail(
    strict=True,
    reason=NESTED_ROW,
)
def test_the_owners_after_row_trigger_writing_a_fee_row_of_the_same_wallet(running):  # noqa: F811
    """An owner's AFTER ROW trigger charging a fee (a ledger row of the same
    wallet) for each purchase: its nested INSERT takes the outer statement's
    running balance (not applied yet) as its wallet's."""
    running.execute("""
        CREATE FUNCTION fee() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO app_transaction (wallet_id, amount, reason)
            VALUES (NEW.wallet_id, -1, 'fee');
            RETURN NULL;
        END;
        $$;
        CREATE TRIGGER fee AFTER INSERT ON app_transaction FOR EACH ROW
        WHEN (NEW.reason = 'purchase') EXECUTE FUNCTION fee();
    """)
    pay(running, 1, 100)
    ok = attempt(running, ROWS + "(1, -10, 'purchase')")
    consistent(running)
    assert ok, "a single purchase with a fee trigger is refused"


@pytest.mark.xfail(
    strict=True,
    reason=APPLIED_AT_END,
)
def test_an_app_login_moves_a_wallet_inside_its_insert(running, login):  # noqa: F811
    """The move attack as an app login with the rights a web app has: INSERT on
    the ledger, UPDATE of the wallet's owner."""
    running.execute("GRANT INSERT, SELECT ON app_transaction TO economy_app")
    running.execute("GRANT USAGE ON SEQUENCE app_transaction_id_seq TO economy_app")
    running.execute("GRANT SELECT, UPDATE (profile_id) ON app_wallet TO economy_app")
    app = login("economy_app")
    app.execute(
        "WITH mv AS (UPDATE app_wallet SET profile_id = 2 WHERE id = 1 RETURNING id)"
        " INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (1, 10, 'x')"
    )
    consistent(running)
