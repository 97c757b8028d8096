"""Small helpers shared by the tests."""

import os
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psycopg


@dataclass(frozen=True)
class State:
    """Everything a rejected call must leave untouched."""

    ledger_rows: int
    wallets: tuple
    profiles: tuple
    reconcile_log_rows: int


def state(conn: psycopg.Connection) -> State:
    one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
    return State(
        ledger_rows=one("SELECT count(*) FROM economy.transaction"),
        wallets=tuple(conn.execute("SELECT * FROM economy.wallet ORDER BY id").fetchall()),
        profiles=tuple(conn.execute("SELECT * FROM economy.profile ORDER BY user_id").fetchall()),
        reconcile_log_rows=one("SELECT count(*) FROM economy.reconcile_log"),
    )


def open_wallet(conn: psycopg.Connection, user_id: int, overdraft_limit: str = "0") -> int:
    return conn.execute(
        "SELECT economy.open_wallet(%s::bigint, overdraft_limit => %s::numeric)",
        [user_id, Decimal(overdraft_limit)],
    ).fetchone()[0]


def post(conn, wallet_id, amount, kind="reward", idempotency_key=None, memo=None):
    """economy.post_transaction; returns the entry as a dict."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        "SELECT * FROM economy.post_transaction("
        "%s::bigint, %s::numeric, %s::text, %s::text, %s::text)",
        [
            wallet_id,
            Decimal(amount) if isinstance(amount, str) else amount,
            kind,
            idempotency_key,
            memo,
        ],
    ).fetchone()


def balances(conn, wallet_id: int) -> tuple[Decimal, Decimal, Decimal]:
    """(wallet.balance, profile.balance, profile.lifetime_earnings)."""
    return conn.execute(
        "SELECT w.balance, p.balance, p.lifetime_earnings FROM economy.wallet w"
        " JOIN economy.profile p ON p.user_id = w.user_id WHERE w.id = %s",
        [wallet_id],
    ).fetchone()


def drift(conn) -> list[tuple]:
    return conn.execute("SELECT * FROM economy.balance_drift()").fetchall()


# the roles the package creates (the `login` fixture connects as a member of one)
PACKAGE_ROLES = ("economy_app", "economy_operator")


EXECUTABLE = Path(sys.executable).with_name("economy-sync")


def run(*args, dsn=None, env_dsn=None, timeout=300) -> subprocess.CompletedProcess:
    """The economy-sync command, as a user runs it (DATABASE_URL only when given)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if env_dsn:
        env["DATABASE_URL"] = env_dsn
    command = [str(EXECUTABLE), *args] + (["--dsn", dsn] if dsn else [])
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def load_without_sync(conn, wallet_id, amount, kind="prize", rows=1) -> None:
    """How drift happens in real life: a load with the sync triggers off, the
    README's recipe (the table's owner may; no superuser needed)."""
    with conn.transaction():
        conn.execute("ALTER TABLE economy.transaction DISABLE TRIGGER USER")
        conn.execute(
            "INSERT INTO economy.transaction (wallet_id, amount, kind)"
            " SELECT %s, %s, %s FROM generate_series(1, %s)",
            [wallet_id, Decimal(amount), kind, rows],
        )
        conn.execute("ALTER TABLE economy.transaction ENABLE TRIGGER USER")


# An app's own tables, shaped like the Django platform this project grew out of
# (integer wallet caches, an ownerless treasury wallet, numeric(10, 2) profile
# figures keyed by the profile's id, earnings = every credit), and its attach.
SEED_TABLES = """
CREATE TABLE app_profile (
    id bigserial PRIMARY KEY,
    username text NOT NULL DEFAULT '',
    deltacoin_balance numeric(10, 2) NOT NULL DEFAULT 0,
    lifetime_earnings numeric(10, 2) NOT NULL DEFAULT 0
);
CREATE TABLE app_wallet (
    id serial PRIMARY KEY,
    profile_id bigint REFERENCES app_profile DEFERRABLE INITIALLY DEFERRED,
    cached_balance integer NOT NULL DEFAULT 0,
    lifetime_earnings integer NOT NULL DEFAULT 0,
    is_deleted boolean NOT NULL DEFAULT false
);
CREATE TABLE app_transaction (
    id bigserial PRIMARY KEY,
    wallet_id integer NOT NULL REFERENCES app_wallet DEFERRABLE INITIALLY DEFERRED,
    amount integer NOT NULL,
    reason varchar(32) NOT NULL,
    cached_balance_after integer
);
CREATE INDEX ON app_transaction (wallet_id);
"""
SEED_ATTACH = """
SELECT economy.attach(
    'seed', 'app_transaction', 'app_wallet',
    wallet_balance_column => 'cached_balance',
    wallet_earnings_column => 'lifetime_earnings',
    wallet_owner_column => 'profile_id',
    profile => 'app_profile',
    profile_balance_column => 'deltacoin_balance',
    profile_earnings_column => 'lifetime_earnings')
"""

# The seed app with holds: its wallets' pending_balance caches the sum of their
# holds, a capture writes its kind to the ledger's reason, and profiles'
# wallets may not go below 0 (the ownerless treasury has no limit).
SEED_HELD_COLUMN = "ALTER TABLE app_wallet ADD pending_balance integer NOT NULL DEFAULT 0"
SEED_ATTACH_WITH_HOLDS = SEED_ATTACH.replace(
    "'lifetime_earnings')",
    "'lifetime_earnings',"
    " overdraft_limit => 'CASE WHEN profile_id IS NULL THEN NULL ELSE 0 END',"
    " held_column => 'pending_balance', kind_column => 'reason')",
)


def seed_with_holds(conn):
    """Profiles 1 and 2 with wallets 1 and 2 (100 on each), the treasury 3."""
    conn.execute(SEED_TABLES)
    conn.execute(SEED_HELD_COLUMN)
    conn.execute(SEED_ATTACH_WITH_HOLDS)
    conn.execute("INSERT INTO app_profile (username) VALUES ('ana'), ('bo')")
    conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1), (2), (NULL)")
    for wallet in (1, 2):
        pay(conn, wallet, 100)
    return conn


# The seed ledger partitioned by wallet (after SEED_TABLES' profiles and
# wallets): partition 1 holds wallet 1's rows, the default one the others'.
SEED_PARTITIONED_LEDGER = """
CREATE TABLE app_transaction (id bigserial, wallet_id integer NOT NULL,
    amount integer NOT NULL, reason text NOT NULL, PRIMARY KEY (id, wallet_id))
PARTITION BY LIST (wallet_id);
CREATE TABLE app_transaction_1 PARTITION OF app_transaction FOR VALUES IN (1);
CREATE TABLE app_transaction_rest PARTITION OF app_transaction DEFAULT
"""


def seed_entries(conn):
    """Three profiles with a wallet each, and 30 entries among them (ids 1-30)."""
    conn.execute("INSERT INTO app_profile (username) SELECT 'u' || g FROM generate_series(1, 3) g")
    conn.execute("INSERT INTO app_wallet (profile_id) SELECT g FROM generate_series(1, 3) g")
    conn.execute(
        "INSERT INTO app_transaction (wallet_id, amount, reason)"
        " SELECT 1 + g % 3, CASE WHEN g % 4 = 0 THEN -1 ELSE 5 END, 'prize'"
        " FROM generate_series(1, 30) g"
    )


def seed_figures(conn):
    """{wallet: (cached_balance, lifetime_earnings)}, {profile: (balance, earnings)}."""
    wallets = conn.execute(
        "SELECT id, cached_balance, lifetime_earnings FROM app_wallet ORDER BY id"
    ).fetchall()
    profiles = conn.execute(
        "SELECT id, deltacoin_balance, lifetime_earnings FROM app_profile ORDER BY id"
    ).fetchall()
    return {w: (b, e) for w, b, e in wallets}, {p: (b, e) for p, b, e in profiles}


def attached_drift(conn, attachment, user_ids=None):
    return conn.execute(
        "SELECT * FROM economy.balance_drift(%s::bigint[], attachment => %s)",
        [user_ids, attachment],
    ).fetchall()


def pay(conn, wallet, amount, reason="prize"):
    conn.execute(
        "INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (%s, %s, %s)",
        [wallet, amount, reason],
    )


def counted(conn, tables, counter, work) -> dict[str, int]:
    """{table: how much work() added to the statistics `counter` (SQL of the
    table t) of it}, counted in one transaction (two readings: pending
    statistics may still hold an earlier transaction's)."""

    def count(table):
        return conn.execute(
            f"SELECT {counter} FROM CAST(%s AS regclass) t",
            [table],  # the caller's SQL
        ).fetchone()[0]

    with conn.transaction():
        before = {table: count(table) for table in tables}
        work()
        return {table: count(table) - before[table] for table in tables}


def rows_updated(conn, tables, write) -> dict[str, int]:
    """{table: row versions write() updated in it}."""
    return counted(conn, tables, "pg_stat_get_xact_tuples_updated(t)", write)


def rows_read(conn, table, read) -> int:
    """Rows of the table read() read, by scans of it or through its indexes."""
    counter = "pg_stat_get_xact_tuples_returned(t) + pg_stat_get_xact_tuples_fetched(t)"
    return counted(conn, [table], counter, read)[table]


def chained(conn, wallet_id) -> bool:
    """Applied one after another (in the order their transactions got the
    wallet, not their ids), each entry starts where the one before it ended:
    the balances before the entries, plus the final balance, are the balances
    after them, plus the opening 0."""
    rows = conn.execute(
        "SELECT amount, balance_after FROM economy.transaction WHERE wallet_id = %s", [wallet_id]
    ).fetchall()
    befores = sorted([after - amount for amount, after in rows] + [balances(conn, wallet_id)[0]])
    return befores == sorted([after for _, after in rows] + [Decimal("0.00")])
