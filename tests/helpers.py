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
