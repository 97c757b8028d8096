"""economy.attach: the sync, drift and reconcile on an application's own tables.

Two app shapes: `seed`, shaped like the Django platform this project grew out
of (integer wallet caches, an ownerless treasury wallet, numeric(10, 2) profile
figures keyed by the profile's id, earnings = every credit), and `multi`
(several wallets per owner, bigint amounts, earnings by kind)."""

import io
import threading
from contextlib import redirect_stdout
from decimal import Decimal

import psycopg
import pytest
from helpers import SEED_ATTACH, SEED_TABLES, pay, seed_figures
from helpers import attached_drift as drift
from psycopg import errors

from economy_sync import (
    get_balance_drift,
    recompute_lifetime_earnings,
    reconcile,
    sync_wallet_to_profile,
)
from economy_sync.cli import main as cli

MULTI_TABLES = """
CREATE TABLE owner (
    owner_id bigint PRIMARY KEY, balance bigint NOT NULL DEFAULT 0, earned bigint NOT NULL DEFAULT 0
);
CREATE TABLE account (
    account_id bigint PRIMARY KEY, owner_id bigint NOT NULL REFERENCES owner,
    balance bigint NOT NULL DEFAULT 0, label text
);
CREATE TABLE entry (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES account, cents bigint NOT NULL, kind text NOT NULL
);
CREATE INDEX ON entry (account_id);
"""
MULTI_ATTACH = """
SELECT economy.attach(
    'multi', 'entry', 'account',
    ledger_wallet_column => 'account_id', amount_column => 'cents',
    wallet_owner_column => 'owner_id',
    profile => 'owner', profile_key_column => 'owner_id',
    profile_balance_column => 'balance', profile_earnings_column => 'earned',
    earning => 'kind IN (''prize'', ''reward'')')
"""


@pytest.fixture
def multi(conn):
    """Owner 10 with accounts 100 and 101, owner 20 with account 200."""
    conn.execute(MULTI_TABLES)
    conn.execute(MULTI_ATTACH)
    conn.execute("INSERT INTO owner (owner_id) VALUES (10), (20)")
    conn.execute(
        "INSERT INTO account (account_id, owner_id) VALUES (100, 10), (101, 10), (200, 20)"
    )
    return conn


# Every way of writing the ledger moves the caches


def test_inserts_of_every_kind_are_synced(seed):
    pay(seed, 1, 100)
    seed.execute(
        "INSERT INTO app_transaction (wallet_id, amount, reason)"
        " VALUES (1, -30, 'purchase'), (2, 50, 'prize'), (3, 5, 'fee')"
    )
    with seed.cursor().copy("COPY app_transaction (wallet_id, amount, reason) FROM STDIN") as copy:
        copy.write_row((2, 7, "reward"))
        copy.write_row((3, -2, "payout"))
    wallets, profiles = seed_figures(seed)
    assert wallets == {1: (70, 100), 2: (57, 57), 3: (3, 5)}
    assert profiles == {1: (Decimal("70.00"), Decimal("100.00")), 2: (Decimal("57.00"),) * 2}
    assert drift(seed, "seed") == []


def test_updates_and_deletes_are_synced(seed):
    pay(seed, 1, 100)
    pay(seed, 1, -30, "purchase")
    seed.execute("UPDATE app_transaction SET amount = -40 WHERE amount = -30")
    seed.execute("UPDATE app_transaction SET wallet_id = 2 WHERE amount = -40")
    seed.execute("UPDATE app_transaction SET cached_balance_after = 1")  # nothing to sync
    wallets, profiles = seed_figures(seed)
    assert (wallets[1], wallets[2]) == ((100, 100), (-40, 0))
    seed.execute("DELETE FROM app_transaction WHERE amount = 100")
    wallets, profiles = seed_figures(seed)
    assert wallets[1] == (0, 0)
    assert profiles[1] == (Decimal("0.00"), Decimal("0.00"))
    assert drift(seed, "seed") == []


def test_an_update_of_what_earning_reads_is_synced(multi):
    multi.execute("INSERT INTO entry (account_id, cents, kind) VALUES (100, 500, 'refund')")
    assert multi.execute("SELECT earned FROM owner WHERE owner_id = 10").fetchone() == (0,)
    multi.execute("UPDATE entry SET kind = 'prize'")
    assert multi.execute("SELECT balance, earned FROM owner WHERE owner_id = 10").fetchone() == (
        500,
        500,
    )
    assert drift(multi, "multi") == []


def test_truncate_of_an_attached_ledger_is_refused(seed):
    pay(seed, 1, 100)
    with pytest.raises(errors.RestrictViolation, match="TRUNCATE"):
        seed.execute("TRUNCATE app_transaction")
    assert seed.execute("SELECT count(*) FROM app_transaction").fetchone() == (1,)


def test_profile_figures_sum_over_an_owners_wallets(multi):
    multi.execute(
        "INSERT INTO entry (account_id, cents, kind)"
        " VALUES (100, 1000, 'prize'), (101, 250, 'refund'), (200, 40, 'reward')"
    )
    owners = multi.execute("SELECT owner_id, balance, earned FROM owner ORDER BY 1").fetchall()
    assert owners == [(10, 1250, 1000), (20, 40, 40)]
    accounts = multi.execute("SELECT account_id, balance FROM account ORDER BY 1").fetchall()
    assert accounts == [(100, 1000), (101, 250), (200, 40)]


def test_a_wallet_given_to_another_owner_takes_its_figures(seed):
    pay(seed, 2, 60)
    seed.execute("UPDATE app_wallet SET profile_id = 1 WHERE id = 2")
    _, profiles = seed_figures(seed)
    assert profiles == {1: (Decimal("60.00"),) * 2, 2: (Decimal("0.00"),) * 2}
    assert drift(seed, "seed") == []


# Cached columns belong to the sync


def test_a_stale_save_keeps_the_cached_columns_and_saves_the_rest(seed):
    pay(seed, 1, 100)
    seed.execute(
        "UPDATE app_wallet SET cached_balance = 0, lifetime_earnings = 0, is_deleted = true"
        " WHERE id = 1"
    )
    seed.execute("UPDATE app_profile SET deltacoin_balance = 5, username = 'ann' WHERE id = 1")
    assert seed.execute(
        "SELECT cached_balance, is_deleted FROM app_wallet WHERE id = 1"
    ).fetchone() == (
        100,
        True,
    )
    assert seed.execute(
        "SELECT deltacoin_balance, username FROM app_profile WHERE id = 1"
    ).fetchone() == (
        Decimal("100.00"),
        "ann",
    )


def test_the_old_plus_equals_code_cannot_double_count(seed):
    """Application code that still does `cached_balance += x; save()`."""
    pay(seed, 1, 100)
    seed.execute("UPDATE app_wallet SET cached_balance = cached_balance + 100 WHERE id = 1")
    assert seed_figures(seed)[0][1] == (100, 100)


# Types are the app's


@pytest.mark.parametrize(
    ("wallet", "amount"),
    [(3, 2_000_000_000), (1, 60_000_000)],
    ids=["integer_wallet_cache", "numeric_10_2_profile"],
)
def test_a_result_that_does_not_fit_its_column_is_refused_whole(seed, wallet, amount):
    pay(seed, wallet, amount)
    before = seed_figures(seed)
    with pytest.raises(errors.NumericValueOutOfRange):
        pay(seed, wallet, amount)
    assert seed_figures(seed) == before
    assert seed.execute("SELECT count(*) FROM app_transaction").fetchone() == (1,)


# attach: validated up front, all or nothing, changes no cache


def generated_objects(conn):
    return conn.execute(
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'economy\\_%%'),"
        " (SELECT count(*) FROM pg_proc WHERE proname LIKE 'attached\\_%%\\_%%'),"
        " (SELECT count(*) FROM economy.attachments WHERE name <> 'economy')"
    ).fetchone()


BAD_ARGUMENTS = {
    "unknown_table": ("ledger => 'nope'", errors.UndefinedTable),
    "unknown_column": ("amount_column => 'amt'", errors.UndefinedColumn),
    "text_amount": ("amount_column => 'reason'", errors.DatatypeMismatch),
    "integer_cache_numeric_amount": ("amount_column => 'price'", errors.DatatypeMismatch),
    "earning_not_boolean": ("earning => 'amount + 1'", errors.InvalidParameterValue),
    "earning_unknown_column": ("earning => 'bonus > 0'", errors.InvalidParameterValue),
    "earning_second_statement": (
        "earning => 'true) FROM app_transaction; DROP TABLE app_wallet; --'",
        errors.InvalidParameterValue,
    ),
    "earning_unbalanced": ("earning => 'amount > 0)'", errors.InvalidParameterValue),
    "bad_name": ("name => 'Bad-Name'", errors.InvalidParameterValue),
    "profile_without_owner": (
        "wallet_owner_column => NULL, profile => 'app_profile'",
        errors.InvalidParameterValue,
    ),
    "same_table_twice": ("wallet => 'app_transaction'", errors.InvalidParameterValue),
    "not_a_table": ("wallet => 'app_wallet_id_seq'", errors.WrongObjectType),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_attach_refuses_a_bad_argument_and_creates_nothing(conn, case):
    conn.execute(SEED_TABLES)
    conn.execute("ALTER TABLE app_transaction ADD COLUMN price numeric(8, 2)")
    override, error = BAD_ARGUMENTS[case]
    arguments = {
        "name": "'seed'",
        "ledger": "'app_transaction'",
        "wallet": "'app_wallet'",
        "wallet_balance_column": "'cached_balance'",
        "wallet_owner_column": "'profile_id'",
    }
    for part in override.split(", "):
        key, value = part.split(" => ", 1)
        arguments[key] = value
    call = ", ".join(f"{key} => {value}" for key, value in arguments.items())
    with pytest.raises(error):
        conn.execute(f"SELECT economy.attach({call})")  # the test's own constants
    assert generated_objects(conn) == (0, 0, 0)
    assert conn.execute("SELECT to_regclass('app_wallet')").fetchone()[0] is not None


def test_a_duplicate_name_or_ledger_is_refused(seed):
    before = generated_objects(seed)
    with pytest.raises(errors.DuplicateObject):
        seed.execute(SEED_ATTACH)
    assert generated_objects(seed) == before


def test_attach_changes_no_cache_and_reconcile_repairs_existing_drift(conn):
    conn.execute(SEED_TABLES)
    conn.execute("INSERT INTO app_profile DEFAULT VALUES")
    conn.execute("INSERT INTO app_wallet (profile_id, cached_balance) VALUES (1, 7), (NULL, 3)")
    conn.execute("INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (1, 10, 'prize')")
    conn.execute(SEED_ATTACH)
    assert seed_figures(conn)[0] == {1: (7, 0), 2: (3, 0)}
    assert [(r[0], r[1], r[2]) for r in drift(conn, "seed")] == [
        (1, 1, "wallet.balance"),
        (1, 1, "wallet.lifetime_earnings"),
        (1, 1, "profile.balance"),
        (1, 1, "profile.lifetime_earnings"),
        (None, 2, "wallet.balance"),
    ]
    summary = reconcile(conn, dry_run=False, attachment="seed", batch_size=1)
    assert summary.drift_found == 5
    assert drift(conn, "seed") == []
    logged = conn.execute(
        "SELECT DISTINCT run_id::text, attachment FROM economy.reconcile_log"
    ).fetchall()
    assert logged == [(summary.run_id, "seed")]
    assert conn.execute(
        "SELECT count(*) FROM economy.reconcile_log WHERE user_id IS NULL AND wallet_id = 2"
    ).fetchone() == (1,)


def test_detach_removes_everything_and_leaves_the_data(seed):
    pay(seed, 1, 100)
    before = seed_figures(seed)
    seed.execute("SELECT economy.detach('seed')")
    assert generated_objects(seed) == (0, 0, 0)
    assert seed_figures(seed) == before
    pay(seed, 1, 5)  # not synced any more
    assert seed_figures(seed)[0][1] == (100, 100)
    seed.execute(SEED_ATTACH)  # and attachable again
    assert len(drift(seed, "seed")) == 4


# drift rows name the profile's wallet only when it has one


def test_a_profile_row_names_its_only_wallet(multi):
    multi.execute("INSERT INTO entry (account_id, cents, kind) VALUES (100, 5, 'prize')")
    multi.execute("INSERT INTO entry (account_id, cents, kind) VALUES (200, 5, 'prize')")
    multi.execute("ALTER TABLE owner DISABLE TRIGGER USER")
    multi.execute("UPDATE owner SET balance = 0")
    multi.execute("ALTER TABLE owner ENABLE TRIGGER USER")
    rows = drift(multi, "multi")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (10, None, "profile.balance"),
        (20, 200, "profile.balance"),
    ]


# The Python API and the command line take attachment


def test_python_api_on_an_attachment(seed):
    pay(seed, 3, 9, "fee")
    seed.execute("ALTER TABLE app_wallet DISABLE TRIGGER USER")
    seed.execute("UPDATE app_wallet SET cached_balance = 0")
    seed.execute("ALTER TABLE app_wallet ENABLE TRIGGER USER")
    assert [r.field for r in get_balance_drift(seed, 3, attachment="seed")] == ["wallet.balance"]
    assert get_balance_drift(seed, 1, attachment="seed") == []
    assert recompute_lifetime_earnings(seed, 3, attachment="seed") == Decimal("9")
    fixed = sync_wallet_to_profile(seed, 3, attachment="seed")
    assert [(r.user_id, r.wallet_id, r.field, r.fixed) for r in fixed] == [
        (None, 3, "wallet.balance", True)
    ]
    assert get_balance_drift(seed, 3, attachment="seed") == []


def test_cli_on_an_attachment(seed, dsn):
    pay(seed, 1, 100)
    seed.execute("ALTER TABLE app_profile DISABLE TRIGGER USER")
    seed.execute("UPDATE app_profile SET deltacoin_balance = 1")
    seed.execute("ALTER TABLE app_profile ENABLE TRIGGER USER")
    with redirect_stdout(io.StringIO()) as out:
        assert cli(["--dsn", dsn, "drift", "--attachment", "seed", "--json"]) == 1
    assert '"field": "profile.balance"' in out.getvalue()
    with redirect_stdout(io.StringIO()):
        assert cli(["--dsn", dsn, "reconcile", "--attachment", "seed", "--apply", "--all"]) == 0
        assert cli(["--dsn", dsn, "doctor", "--attachment", "seed"]) == 0
        assert cli(["--dsn", dsn, "drift", "--attachment", "nope"]) == 2


def test_roles_on_an_attachment(seed, login):
    pay(seed, 1, 100)
    app = login("economy_app")
    assert drift(app, "seed") == []
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute("SELECT * FROM economy.reconcile_economy(false, attachment => 'seed')")
    operator = login("economy_operator")
    operator.execute("SELECT * FROM economy.reconcile_economy(false, attachment => 'seed')")


# Concurrency: writers, a shared treasury wallet and real reconciles


def test_writers_with_a_shared_treasury_beside_reconciles_lose_nothing(seed, connect, dsn):
    """Every purchase pays a fee to the ownerless treasury (wallet 3)."""
    stop, repairs = threading.Event(), []

    def reconcile_loop():
        with psycopg.connect(dsn, autocommit=True) as c:
            while not stop.is_set():
                repairs.extend(reconcile(c, dry_run=False, attachment="seed").rows)

    def writer(number):
        c = connect()
        for i in range(40):
            with c.transaction():
                wallet = 1 + (number + i) % 2
                pay(c, wallet, 10, "prize")
                pay(c, wallet, -3, "purchase")
                pay(c, 3, 1, "fee")

    reconciler = threading.Thread(target=reconcile_loop)
    reconciler.start()
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reconciler.join()
    assert repairs == []
    wallets, profiles = seed_figures(seed)
    assert wallets == {1: (840, 1200), 2: (840, 1200), 3: (240, 240)}
    assert profiles[1] == (Decimal("840.00"), Decimal("1200.00"))
    assert drift(seed, "seed") == []


# balance_after_column: each entry records its wallet's balance after it


def test_balance_after_column_records_the_running_balance(conn):
    conn.execute(SEED_TABLES)
    conn.execute(
        "SELECT economy.attach('seed', 'app_transaction', 'app_wallet',"
        " wallet_balance_column => 'cached_balance', wallet_owner_column => 'profile_id',"
        " balance_after_column => 'cached_balance_after')"
    )
    conn.execute("INSERT INTO app_wallet (profile_id) VALUES (NULL)")
    pay(conn, 1, 100)
    conn.execute(
        "INSERT INTO app_transaction (wallet_id, amount, reason, cached_balance_after)"
        " VALUES (1, -30, 'purchase', 999), (1, 5, 'fee', NULL)"  # the app's values are replaced
    )
    after = lambda: [r[0] for r in conn.execute(  # noqa: E731
        "SELECT cached_balance_after FROM app_transaction ORDER BY id")]  # fmt: skip
    assert after() == [100, 70, 75]
    conn.execute("UPDATE app_transaction SET amount = 10 WHERE amount = 5")
    conn.execute("DELETE FROM app_transaction WHERE amount = -30")
    assert after() == [100, 75]  # history as it was applied, not rewritten
    assert seed_figures(conn)[0][1] == (110, 0)
    assert drift(conn, "seed") == []
