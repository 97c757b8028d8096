"""`economy-sync demo`: the whole story on a throwaway PostgreSQL (or on an
empty database given with --dsn): install, use, drift, find, repair, check."""

from contextlib import nullcontext
from decimal import Decimal

import psycopg
from rich.console import Console
from rich.rule import Rule

from economy_sync import api, migrate
from economy_sync.console import drift_table, print_counts, run_reconcile
from economy_sync.errors import CliError
from economy_sync.throwaway import throwaway_postgresql

USERS = 500
BULK_LOADED_WALLETS = 25


def run_demo(dsn: str | None, out: Console) -> int:
    if dsn is None:
        out.print(Rule("Starting a throwaway PostgreSQL"))
        server = throwaway_postgresql(dbname="economy_demo")
    else:
        server = nullcontext(dsn)
    with server as demo_dsn:
        with psycopg.connect(demo_dsn, autocommit=True) as conn:
            tables = user_tables(conn)
        if tables:
            raise CliError(
                "demo needs an empty database (its ledger entries can never be deleted):"
                f" this one has tables ({', '.join(tables[:3])}…);"
                " run it without --dsn for a throwaway server"
            )
        out.print(Rule("1. Install: alembic upgrade head"))
        migrate.upgrade(demo_dsn)
        out.print(f"schema economy at revision {migrate.head_revision()}")
        with psycopg.connect(demo_dsn, autocommit=True) as conn:
            healthy = tell_the_story(conn, out)
        if dsn is None:
            out.print(Rule("Stopping the throwaway PostgreSQL"))
    return 0 if healthy else 1


def tell_the_story(conn: psycopg.Connection, out: Console) -> bool:
    out.print(Rule("2. Use: wallets, entries, transfers, reversals"))
    create_sample_data(conn)
    out.print(
        f"{USERS} wallets and {count(conn, 'economy.transaction')} ledger entries,"
        f" every cache synced by the triggers: drift = {drift_count(conn)}"
    )

    out.print(Rule("3. Drift, as it happens: a bulk load with the sync trigger off"))
    bulk_load_without_trigger(conn)
    conn.execute("UPDATE economy.profile SET balance = balance + 100 WHERE user_id = 42")
    out.print("and one manual UPDATE of a cached balance (user 42)")
    rows = api.balance_drift(conn)
    out.print(drift_table(rows[:9], f"economy.balance_drift(): {len(rows)} rows, the first 9"))

    out.print(Rule("4. Find it: economy-sync reconcile --dry-run"))
    dry = run_reconcile(conn, dry_run=True, batch_size=100)
    print_counts(dry, out)

    out.print(Rule("5. Repair it: economy-sync reconcile --apply --all"))
    fixed = run_reconcile(conn, dry_run=False, batch_size=100)
    print_counts(fixed, out)
    out.print(f"economy.reconcile_log: {count(conn, 'economy.reconcile_log')} fixes recorded")

    out.print(Rule("6. Check: nothing left"))
    left = drift_count(conn)
    out.print(f"drift = {left}")
    healthy = left == 0 and fixed.drift_found == dry.drift_found == len(rows)
    out.print("[bold green]In sync.[/]" if healthy else "[bold red]Still drifting![/]")
    return healthy


def user_tables(conn: psycopg.Connection) -> list[str]:
    """The tables of the database outside the system's schemas."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema'"
            " AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1"
        )
    ]


def count(conn: psycopg.Connection, table: str) -> int:
    # table is one of this module's constants, never input
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def drift_count(conn: psycopg.Connection) -> int:
    return len(api.balance_drift(conn))


def create_sample_data(conn: psycopg.Connection) -> None:
    """Every way in: the API functions and a plain multi-row INSERT."""
    with conn.transaction():
        conn.execute("SELECT setseed(0.42)")
        conn.execute(
            "SELECT economy.open_wallet(u, overdraft_limit => 50 * (u %% 10 = 0)::integer)"
            " FROM generate_series(1, %s) u",
            [USERS],
        )
        conn.execute(
            "INSERT INTO economy.transaction (wallet_id, amount, kind, memo)"
            " SELECT w.id, round((1 + random() * 99)::numeric, 2),"
            " (ARRAY['prize', 'reward', 'refund'])[1 + g % 3], 'season ' || g"
            " FROM economy.wallet w, generate_series(1, 10) g"
        )
        conn.execute(
            "SELECT economy.post_transaction(w.id, -5.00, 'purchase', 'order-' || w.id)"
            " FROM economy.wallet w"
        )
        conn.execute(
            "SELECT economy.transfer(w.id, w.id + 1, 2.50, 'gift-' || w.id)"
            " FROM economy.wallet w WHERE w.id < %s ORDER BY w.id",
            [USERS],
        )
        conn.execute(
            "SELECT economy.reverse_transaction(t.id, 'chargeback') FROM economy.transaction t"
            " WHERE t.kind = 'purchase' ORDER BY t.id LIMIT 10"
        )


def bulk_load_without_trigger(conn: psycopg.Connection) -> None:
    """An operator's import: the user triggers switched off around a COPY, in
    one transaction, as the README's bulk-load recipe writes it."""
    with conn.transaction():
        conn.execute("ALTER TABLE economy.transaction DISABLE TRIGGER USER")
        with conn.cursor().copy(
            "COPY economy.transaction (wallet_id, amount, kind, memo) FROM STDIN"
        ) as copy:
            for wallet_id in range(1, BULK_LOADED_WALLETS + 1):
                for amount in ("12.34", "0.66", "-3.00"):
                    kind = "prize" if Decimal(amount) > 0 else "fee"
                    copy.write_row((wallet_id, Decimal(amount), kind, "imported"))
        conn.execute("ALTER TABLE economy.transaction ENABLE TRIGGER USER")
