"""Benchmarks: the trigger design against its baselines, measured side by side
in one run on a throwaway PostgreSQL; writes docs/BENCHMARKS.md.

    .venv/bin/python scripts/bench/bench.py                  # full scale (about 15 min)
    .venv/bin/python scripts/bench/bench.py --scale smoke    # seconds, to keep it working

Throughput comes from pgbench with custom scripts. These machines are noisy:
every figure is a median of repeated runs, and every verdict is a ratio to a
baseline measured in the same run, interleaved with it.
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from economy_sync import advance_checkpoint, migrate
from economy_sync._paths import SOURCE_ROOT
from economy_sync.throwaway import ThrowawayServer

SCALES = {
    # wallets for throughput; wallets and entries for the drift scan; seconds per run
    "full": {
        "wallets": 100_000,
        "scan_wallets": 1_000_000,
        "scan_entries": 10_000_000,
        "seconds": 10,
        "repeats": 3,
        "copy_rows": 1_000_000,
        "one_wallet_rows": 100_000,
    },
    "smoke": {
        "wallets": 1_000,
        "scan_wallets": 2_000,
        "scan_entries": 20_000,
        "seconds": 1,
        "transactions": 20,  # per client, instead of a run of `seconds`: keeps it quick
        "repeats": 1,
        "copy_rows": 2_000,
        "one_wallet_rows": 2_000,
    },
}
# fsync on: the throwaway server's launcher passes -F (no fsync, right for
# tests); a later -c wins. What the server really runs with is read back.
SERVER_SETTINGS = (
    "-c shared_buffers=1GB -c max_wal_size=8GB -c checkpoint_timeout=30min"
    " -c fsync=on -c synchronous_commit=on"
)
REPORTED_SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers")
CLIENTS = 8
# the ledger's sync: apply_entry (each row) and apply_entries (each statement)
SYNC_TRIGGER = ("apply_entry", "apply_entries")

INSERT_ONE = (
    "\\set w random(1, {wallets})\n"
    "INSERT INTO economy.transaction (wallet_id, amount, kind) VALUES (:w, 1.00, 'reward');\n"
)
APP_SIDE = (  # what the project replaces: the client syncs the caches itself
    "\\set w random(1, {wallets})\n"
    "BEGIN;\n"
    "INSERT INTO economy.transaction (wallet_id, amount, kind) VALUES (:w, 1.00, 'reward');\n"
    "UPDATE economy.wallet SET balance = balance + 1.00 WHERE id = :w;\n"
    "UPDATE economy.profile SET balance = balance + 1.00,"
    " lifetime_earnings = lifetime_earnings + 1.00 WHERE user_id = :w;\n"
    "END;\n"
)
BATCH = "economy.transaction_batch"  # multi-row writes applied set-based
INSERT_BULK = (  # 1,000 rows over distinct wallets, in wallet order (the documented lock order)
    "INSERT INTO {ledger} (wallet_id, amount, kind)"
    " SELECT w, 1.00, 'reward' FROM (SELECT DISTINCT 1 + (random() * ({wallets} - 1))::int AS w"
    " FROM generate_series(1, 1100) LIMIT 1000) s ORDER BY w;\n"
)
INSERT_SHARED = (  # 1,000 rows over 100 wallets (10 each), in wallet order
    "INSERT INTO {ledger} (wallet_id, amount, kind)"
    " SELECT w, 1.00, 'reward' FROM (SELECT DISTINCT 1 + (random() * ({wallets} - 1))::int AS w"
    " FROM generate_series(1, 110) LIMIT 100) s, generate_series(1, 10) ORDER BY w;\n"
)
INSERT_DISJOINT = (  # as INSERT_BULK, but each of 2 clients in its own half of the wallets
    "\\set low 1 + :client_id * ({wallets} / 2)\n"
    "\\set span {wallets} / 2 - 1\n"
    "INSERT INTO {ledger} (wallet_id, amount, kind)"
    " SELECT w, 1.00, 'reward' FROM (SELECT DISTINCT :low + (random() * :span)::int AS w"
    " FROM generate_series(1, 1100) LIMIT 1000) s ORDER BY w;\n"
)
INSERT_HOT = (  # wallet 1 is a normal wallet
    "INSERT INTO economy.transaction (wallet_id, amount, kind) VALUES (1, 1.00, 'reward');\n"
)
INSERT_HOT_MARKED = (  # wallet 2 is marked hot (economy.set_hot)
    "INSERT INTO economy.transaction (wallet_id, amount, kind) VALUES (2, 1.00, 'reward');\n"
)
# Transfers: wallet 1 is a normal house wallet, wallet 2 a hot one; the users
# (3 and up) may go below zero (setup_wallets), so that no transfer is refused.
TRANSFER_TO_HOUSE = "\\set u random(3, {wallets})\nSELECT economy.transfer(:u, HOUSE, 1.00);\n"
PAIR_TO_HOUSE = (  # the same two entries as one plain INSERT: no pairing, no replay
    "\\set u random(3, {wallets})\n"
    "INSERT INTO economy.transaction (wallet_id, amount, kind)"
    " VALUES (:u, -1.00, 'transfer'), (HOUSE, 1.00, 'transfer');\n"
)
# a payer and another payee, both users, at random
RANDOM_PAIR = (
    "\\set aN random(3, {wallets})\n"
    "\\set bN 3 + (:aN - 3 + random(1, {wallets} - 3)) % ({wallets} - 2)\n"
)
TRANSFER_RANDOM = RANDOM_PAIR.replace("N", "") + "SELECT economy.transfer(:a, :b, 1.00);\n"
PAIR_RANDOM = RANDOM_PAIR.replace("N", "") + (
    "INSERT INTO economy.transaction (wallet_id, amount, kind)"
    " VALUES (:a, -1.00, 'transfer'), (:b, 1.00, 'transfer');\n"
)
MANY = 10  # transfers per transfer_many call
TRANSFER_MANY = "".join(RANDOM_PAIR.replace("N", str(i)) for i in range(MANY)) + (
    "SELECT count(*) FROM economy.transfer_many("
    f"ARRAY[{', '.join(f':a{i}' for i in range(MANY))}],"
    f" ARRAY[{', '.join(f':b{i}' for i in range(MANY))}],"
    f" array_fill(1.00, ARRAY[{MANY}]));\n"
)


INSERT_METADATA = (
    "\\set w random(1, {wallets})\n"
    "INSERT INTO economy.transaction (wallet_id, amount, kind, metadata)"
    " VALUES (:w, 1.00, 'reward', jsonb_build_object('order', :w, 'channel', 'web'));\n"
)
METADATA_INDEX = "CREATE INDEX bench_metadata ON economy.transaction USING gin (metadata)"


def to_house(script: str, hot: bool) -> str:
    return script.replace("HOUSE", "2" if hot else "1")


# A server whose every disk flush takes 1 ms longer (slowsync.c beside this file,
# preloaded): the flush latency of typical network storage.
SLOWSYNC_SOURCE = Path(__file__).with_name("slowsync.c")
SLOW_FLUSH_US = 1000
LEDGER = "economy.transaction"
# The floor of any row-level sync: a trigger that only updates the two cached
# rows (no checks, no balance_after, no earnings), in place of apply_entry.
FLOOR_TRIGGER = """
CREATE FUNCTION bench_floor_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE economy.wallet w SET balance = w.balance + NEW.amount WHERE w.id = NEW.wallet_id;
    UPDATE economy.profile p SET balance = p.balance + NEW.amount WHERE p.user_id = NEW.wallet_id;
    RETURN NEW;
END;
$$;
CREATE TRIGGER bench_floor_sync BEFORE INSERT ON economy.transaction
FOR EACH ROW EXECUTE FUNCTION bench_floor_sync();
ALTER TABLE economy.transaction DISABLE TRIGGER bench_floor_sync;
"""
# The floor of any sync that gives each row its balance_after: a row trigger
# that only sets it (no lock, no running sum, no cache written), in place of
# apply_entry and apply_entries.
ROW_FLOOR_TRIGGER = """
CREATE FUNCTION bench_row_floor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.balance_after := NEW.amount;
    RETURN NEW;
END;
$$;
CREATE TRIGGER bench_row_floor BEFORE INSERT ON economy.transaction
FOR EACH ROW EXECUTE FUNCTION bench_row_floor();
ALTER TABLE economy.transaction DISABLE TRIGGER bench_row_floor;
"""
# The floor of any staged set-based path, in place of apply_batch: the rows
# moved into the ledger and one UPDATE per wallet and per profile (no lock
# order, no running balance_after, no checks, no earnings).
BATCH_FLOOR_TRIGGER = """
CREATE FUNCTION bench_batch_floor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH entries AS (
        INSERT INTO economy.transaction (wallet_id, amount, kind, balance_after)
        SELECT b.wallet_id, b.amount, b.kind, b.amount FROM batch b
        RETURNING wallet_id, amount
    ),
    totals AS (SELECT wallet_id, sum(amount) AS amount FROM entries GROUP BY wallet_id),
    wallets AS (
        UPDATE economy.wallet w SET balance = w.balance + t.amount FROM totals t
        WHERE w.id = t.wallet_id RETURNING w.user_id, t.amount
    )
    UPDATE economy.profile p SET balance = p.balance + x.amount FROM wallets x
    WHERE p.user_id = x.user_id;
    DELETE FROM economy.transaction_batch x USING batch b WHERE x.position = b.position;
    RETURN NULL;
END;
$$;
CREATE TRIGGER bench_batch_floor AFTER INSERT ON economy.transaction_batch
REFERENCING NEW TABLE AS batch FOR EACH STATEMENT EXECUTE FUNCTION bench_batch_floor();
ALTER TABLE economy.transaction_batch DISABLE TRIGGER bench_batch_floor;
"""

# An app's own tables, attached (economy.attach): shaped like the Django
# platform economy-sync grew out of (integer caches, numeric(10, 2) profiles).
ATTACHED_TABLES = """
CREATE TABLE app_profile (id bigint PRIMARY KEY, balance numeric(10, 2) NOT NULL DEFAULT 0,
    lifetime_earnings numeric(10, 2) NOT NULL DEFAULT 0) WITH (fillfactor = 70);
CREATE TABLE app_wallet (id integer PRIMARY KEY, profile_id bigint REFERENCES app_profile,
    cached_balance integer NOT NULL DEFAULT 0) WITH (fillfactor = 70);
CREATE TABLE app_transaction (id bigserial PRIMARY KEY,
    wallet_id integer NOT NULL REFERENCES app_wallet DEFERRABLE INITIALLY DEFERRED,
    amount integer NOT NULL, reason varchar(32) NOT NULL);
CREATE INDEX ON app_transaction (wallet_id);
CREATE INDEX ON app_wallet (profile_id);
"""
# ATTACHED_SYNC: every trigger attach made on the ledger (its row and statement
# triggers), so that bare runs capture no transition table either
ATTACHED_LEDGER, ATTACHED_SYNC = "app_transaction", "USER"
ATTACHED_STATEMENT_TRIGGER = "economy_bench_sync_rows"
ATTACHED_ONE = (
    "\\set w random(1, {wallets})\n"
    "INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (:w, 1, 'reward');\n"
)
ATTACHED_HOT = "INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (1, 1, 'reward');\n"
ATTACHED_HOT_MARKED = (  # the app's wallet 2 is marked hot (set_hot(…, attachment =>))
    "INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (2, 1, 'reward');\n"
)


def for_attachment(script: str) -> str:
    """A script of INSERTs into {ledger}, with the attached app's columns."""
    return script.replace("(wallet_id, amount, kind)", "(wallet_id, amount, reason)").replace(
        "1.00, 'reward'", "1, 'reward'"
    )


@dataclass
class Row:
    scenario: str
    baseline: str
    unit: str
    baseline_runs: list[float]
    candidate_runs: list[float]
    target: str  # "≥ 0.8" or "≤ 1.3": which way is better comes from here; "" for a floor

    @property
    def ratio(self) -> float:
        return statistics.median(self.candidate_runs) / statistics.median(self.baseline_runs)

    def show(self, value: float) -> str:
        return f"{value:.2f} s" if self.unit == "s" else f"{value:,.0f} {self.unit}"

    def holds(self) -> str:
        if not self.target:
            return "—"
        number = float(re.search(r"[\d.]+", self.target).group())
        held = self.ratio >= number if self.target.startswith("≥") else self.ratio <= number
        return "yes" if held else "**no**"


class Bench:
    def __init__(self, server: ThrowawayServer, scale: dict, workdir: Path):
        self.server, self.scale, self.workdir = server, scale, workdir
        self.pgbench = str(Path(server.pg_ctl).with_name("pgbench"))
        self.conn = psycopg.connect(server.dsn, autocommit=True)
        self.flush_env: dict = {}  # the server's slowsync preload, if any

    def sql(self, query: str, params=None):
        return self.conn.execute(query, params)

    def sync_trigger(self, enabled: bool, ledger=LEDGER, trigger=SYNC_TRIGGER) -> None:
        action = "ENABLE" if enabled else "DISABLE"
        for name in (trigger,) if isinstance(trigger, str) else trigger:
            self.sql(f"ALTER TABLE {ledger} {action} TRIGGER {name}")  # our constants

    def fold_parked(self) -> None:
        """Each run starts with no hot credit parked (ours and the attachment's)."""
        self.sql("SELECT economy.fold_hot_wallets(), economy.fold_hot_wallets('bench')")

    def pgbench_tps(self, script: str, clients: int, ledger: str = LEDGER) -> float:
        path = self.workdir / "script.sql"
        path.write_text(script.format(wallets=self.scale["wallets"], ledger=ledger))
        done = subprocess.run(
            [
                self.pgbench,
                "-n",
                "-c",
                str(clients),
                "-j",
                str(min(clients, 2)),
                *(
                    ("-t", str(self.scale["transactions"]))
                    if "transactions" in self.scale
                    else ("-T", str(self.scale["seconds"]))
                ),
                "-f",
                str(path),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.server.port),
                "-U",
                "postgres",
                self.server.dbname,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
        if failed and int(failed.group(1)):
            raise RuntimeError(f"pgbench transactions failed:\n{done.stdout}{done.stderr}")
        return float(re.search(r"tps = ([\d.]+) \(without initial", done.stdout).group(1))

    def interleaved(self, runs: dict) -> dict[str, list[float]]:
        """Each measurement `repeats` times, interleaved so noise hits all alike."""
        results = {name: [] for name in runs}
        for _ in range(self.scale["repeats"]):
            for name, measure in runs.items():
                results[name].append(measure())
        return results

    def tps_with(
        self, script: str, clients: int, trigger: bool, ledger=LEDGER, trigger_name=SYNC_TRIGGER
    ):
        def measure() -> float:
            self.fold_parked()
            self.sync_trigger(trigger, ledger, trigger_name)
            try:
                return self.pgbench_tps(script, clients, ledger)
            finally:
                self.sync_trigger(True, ledger, trigger_name)

        return measure

    def batch_tps(self, script: str, clients: int):
        """tps of a script that writes into economy.transaction_batch."""
        return lambda: self.pgbench_tps(script, clients, BATCH)

    def copy_rows_per_second(self, target: str, trigger: bool, attached: bool = False):
        """rows/s of one COPY of copy_rows ledger rows (from a file the server
        reads) into target, with the ledger's sync triggers on or off; attached:
        into the app's ledger."""
        rows = self.scale["copy_rows"]
        data = self.workdir / "copy.tsv"
        if not data.exists():
            wallets = self.scale["wallets"]
            data.write_text("".join(f"{1 + i * 7919 % wallets}\t1\treward\n" for i in range(rows)))
            data.chmod(0o644)
        ledger, sync = (ATTACHED_LEDGER, ATTACHED_SYNC) if attached else (LEDGER, SYNC_TRIGGER)
        columns = "(wallet_id, amount, reason)" if attached else "(wallet_id, amount, kind)"

        def measure() -> float:
            self.sync_trigger(trigger, ledger, sync)
            try:
                with self.conn.transaction():
                    started = time.perf_counter()
                    self.sql(f"COPY {target} {columns} FROM '{data}'")  # our names
                return rows / (time.perf_counter() - started)
            finally:
                self.sync_trigger(True, ledger, sync)

        return measure

    def one_wallet_seconds(self, trigger: bool, attached: bool = False):
        """Seconds of one INSERT … SELECT of one_wallet_rows rows into wallet 1,
        with the sync triggers on or off."""
        rows = self.scale["one_wallet_rows"]
        ledger, sync = (ATTACHED_LEDGER, ATTACHED_SYNC) if attached else (LEDGER, SYNC_TRIGGER)
        columns = "(wallet_id, amount, reason)" if attached else "(wallet_id, amount, kind)"
        amount = "1" if attached else "1.00"

        def measure() -> float:
            self.sync_trigger(trigger, ledger, sync)
            try:
                started = time.perf_counter()
                self.sql(
                    f"INSERT INTO {ledger} {columns}"  # our names
                    f" SELECT 1, {amount}, 'reward' FROM generate_series(1, {rows})"
                )
                return time.perf_counter() - started
            finally:
                self.sync_trigger(True, ledger, sync)

        return measure

    def tps_with_index(self, script: str, clients: int, index: str):
        """tps with the sync on and one more index on the ledger while it runs."""

        def measure() -> float:
            self.sql(index)
            try:
                return self.pgbench_tps(script, clients)
            finally:
                self.sql("DROP INDEX economy.bench_metadata")

        return measure

    def attached_tps_with(self, script: str, clients: int, trigger: bool):
        return self.tps_with(script, clients, trigger, ATTACHED_LEDGER, ATTACHED_SYNC)

    def floor_tps(
        self, script: str, clients: int, table=LEDGER, sync=SYNC_TRIGGER, floor="bench_floor_sync"
    ):
        """tps with a floor trigger in place of the sync trigger of table (the
        ledger's, or the batch table's: then the ledger's are off too, so the
        floor's rows are synced by it alone)."""

        def measure() -> float:
            self.fold_parked()
            self.sync_trigger(False)
            self.sync_trigger(False, table, sync)
            self.sync_trigger(True, table, floor)
            try:
                return self.pgbench_tps(script, clients, table)
            finally:
                self.sync_trigger(False, table, floor)
                self.sync_trigger(True, table, sync)
                self.sync_trigger(True)

        return measure


@contextmanager
def fresh_bench(scale: dict, wallets: int, env: dict | None = None) -> Iterator[Bench]:
    """A new throwaway server with the schema and `wallets` wallets (env: of
    the server process)."""
    with (
        ThrowawayServer("bench", SERVER_SETTINGS, env) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        migrate.upgrade(server.dsn)
        bench = Bench(server, scale, Path(tmp))
        try:
            setup_wallets(bench.conn, wallets)
            yield bench
        finally:
            bench.conn.close()


def setup_wallets(conn: psycopg.Connection, wallets: int) -> None:
    """wallet id = user id = 1..wallets, straight into the tables (setup only)."""
    conn.execute(
        "INSERT INTO economy.profile (user_id) SELECT g FROM generate_series(1, %s) g", [wallets]
    )
    conn.execute(
        "INSERT INTO economy.wallet (id, user_id, overdraft_limit)"
        " SELECT g, g, 999999999 FROM generate_series(1, %s) g",
        [wallets],
    )
    conn.execute("SELECT setval(pg_get_serial_sequence('economy.wallet', 'id'), %s)", [wallets])
    conn.execute("SELECT economy.set_hot(2)")
    conn.execute(FLOOR_TRIGGER)
    conn.execute(ROW_FLOOR_TRIGGER)
    conn.execute(BATCH_FLOOR_TRIGGER)
    conn.execute("VACUUM ANALYZE economy.wallet, economy.profile")
    conn.execute(ATTACHED_TABLES)
    conn.execute("INSERT INTO app_profile (id) SELECT g FROM generate_series(1, %s) g", [wallets])
    conn.execute(
        "INSERT INTO app_wallet (id, profile_id) SELECT g, g FROM generate_series(1, %s) g",
        [wallets],
    )
    conn.execute(
        "SELECT economy.attach('bench', 'app_transaction', 'app_wallet',"
        " wallet_balance_column => 'cached_balance', wallet_owner_column => 'profile_id',"
        " profile => 'app_profile', profile_balance_column => 'balance',"
        " profile_earnings_column => 'lifetime_earnings')"
    )
    conn.execute("SELECT economy.set_hot(2, attachment => 'bench')")
    conn.execute("VACUUM ANALYZE app_wallet, app_profile")


def flush_dependent_runs(bench: Bench) -> dict:
    """The scenarios whose figures depend on the disk's flush latency: measured
    on the local disk and again on the slow-flush server."""
    return {
        "bare": bench.tps_with(INSERT_ONE, CLIENTS, trigger=False),
        "trigger": bench.tps_with(INSERT_ONE, CLIENTS, trigger=True),
        "hot bare": bench.tps_with(INSERT_HOT, CLIENTS, trigger=False),
        "hot trigger": bench.tps_with(INSERT_HOT, CLIENTS, trigger=True),
        "hot marked": bench.tps_with(INSERT_HOT_MARKED, CLIENTS, trigger=True),
        "attached hot bare": bench.attached_tps_with(ATTACHED_HOT, CLIENTS, trigger=False),
        "attached hot marked": bench.attached_tps_with(ATTACHED_HOT_MARKED, CLIENTS, trigger=True),
        **{
            f"transfer to {kind} house": bench.tps_with(
                to_house(TRANSFER_TO_HOUSE, hot=kind == "hot"), CLIENTS, trigger=True
            )
            for kind in ("normal", "hot")
        },
    }


def flush_dependent_rows(runs: dict, wallets: str, marked_hot_target: str, at: str = ""):
    return [
        Row(
            f"{at}single-row INSERT, {CLIENTS} clients, {wallets}",
            "bare INSERT (sync trigger off)",
            "rows/s",
            runs["bare"],
            runs["trigger"],
            "≥ 0.8",
        ),
        Row(
            f"{at}one normal wallet, {CLIENTS} clients",
            "bare INSERT on one wallet",
            "rows/s",
            runs["hot bare"],
            runs["hot trigger"],
            "≥ 0.2",
        ),
        Row(
            f"{at}one wallet marked hot (`set_hot`), {CLIENTS} clients",
            "bare INSERT on one wallet",
            "rows/s",
            runs["hot bare"],
            runs["hot marked"],
            marked_hot_target,
        ),
        Row(
            f"{at}attached app tables: one wallet marked hot, {CLIENTS} clients",
            "bare INSERT into the app's ledger on one wallet",
            "rows/s",
            runs["attached hot bare"],
            runs["attached hot marked"],
            marked_hot_target,
        ),
        Row(
            f"{at}`transfer` from a random user to a house wallet marked hot, {CLIENTS} clients",
            "the same into a normal house wallet",
            "transfers/s",
            runs["transfer to normal house"],
            runs["transfer to hot house"],
            "≥ 3",
        ),
    ]


def throughput(bench: Bench) -> list[Row]:
    runs = bench.interleaved(
        {
            **flush_dependent_runs(bench),
            "floor": bench.floor_tps(INSERT_ONE, CLIENTS),
            "app": bench.tps_with(APP_SIDE, CLIENTS, trigger=False),
            "bulk bare": bench.tps_with(INSERT_BULK, 2, trigger=False),
            "bulk plain": bench.tps_with(INSERT_BULK, 2, trigger=True),
            "bulk batch": bench.batch_tps(INSERT_BULK, 2),
            "shared bare": bench.tps_with(INSERT_SHARED, 2, trigger=False),
            "shared plain": bench.tps_with(INSERT_SHARED, 2, trigger=True),
            "shared batch": bench.batch_tps(INSERT_SHARED, 2),
            "shared row floor": bench.floor_tps(
                INSERT_SHARED, 2, LEDGER, SYNC_TRIGGER, "bench_row_floor"
            ),
            "shared batch floor": bench.floor_tps(
                INSERT_SHARED, 2, BATCH, "apply_batch", "bench_batch_floor"
            ),
            "disjoint bare": bench.tps_with(INSERT_DISJOINT, 2, trigger=False),
            "disjoint plain": bench.tps_with(INSERT_DISJOINT, 2, trigger=True),
            "copy bare": bench.copy_rows_per_second(LEDGER, trigger=False),
            "copy plain": bench.copy_rows_per_second(LEDGER, trigger=True),
            "one wallet bare": bench.one_wallet_seconds(trigger=False),
            "one wallet plain": bench.one_wallet_seconds(trigger=True),
            "attached one wallet bare": bench.one_wallet_seconds(trigger=False, attached=True),
            "attached one wallet plain": bench.one_wallet_seconds(trigger=True, attached=True),
            "attached bare": bench.attached_tps_with(ATTACHED_ONE, CLIENTS, trigger=False),
            "attached": bench.attached_tps_with(ATTACHED_ONE, CLIENTS, trigger=True),
            "attached row trigger only": bench.tps_with(
                ATTACHED_ONE, CLIENTS, False, ATTACHED_LEDGER, ATTACHED_STATEMENT_TRIGGER
            ),
            "attached hot": bench.attached_tps_with(ATTACHED_HOT, CLIENTS, trigger=True),
            **{
                f"attached {name} {path}": bench.attached_tps_with(
                    for_attachment(script), 2, trigger=(path == "plain")
                )
                for name, script in (
                    ("bulk", INSERT_BULK),
                    ("shared", INSERT_SHARED),
                    ("disjoint", INSERT_DISJOINT),
                )
                for path in ("bare", "plain")
            },
            "attached copy bare": bench.copy_rows_per_second(
                ATTACHED_LEDGER, trigger=False, attached=True
            ),
            "attached copy plain": bench.copy_rows_per_second(
                ATTACHED_LEDGER, trigger=True, attached=True
            ),
            **{
                f"transfer to {kind} house, 2 clients": bench.tps_with(
                    to_house(TRANSFER_TO_HOUSE, hot=kind == "hot"), 2, trigger=True
                )
                for kind in ("normal", "hot")
            },
            "pair to hot house": bench.tps_with(
                to_house(PAIR_TO_HOUSE, hot=True), CLIENTS, trigger=True
            ),
            "random transfer": bench.tps_with(TRANSFER_RANDOM, CLIENTS, trigger=True),
            "random pair bare": bench.tps_with(PAIR_RANDOM, CLIENTS, trigger=False),
            "transfer_many": bench.tps_with(TRANSFER_MANY, CLIENTS, trigger=True),
            "metadata": bench.tps_with(INSERT_METADATA, CLIENTS, trigger=True),
            "metadata indexed": bench.tps_with_index(INSERT_METADATA, CLIENTS, METADATA_INDEX),
        }
    )
    wallets = f"{bench.scale['wallets']:,} wallets"
    return [
        *flush_dependent_rows(runs, wallets, marked_hot_target="≥ 0.7"),
        Row(
            f"single-row INSERT, {CLIENTS} clients, {wallets}",
            "the floor: a trigger doing only the two cache UPDATEs",
            "rows/s",
            runs["floor"],
            runs["trigger"],
            "≥ 0.9",
        ),
        Row(
            f"floor trigger (two cache UPDATEs), {CLIENTS} clients, {wallets}",
            "bare INSERT (sync trigger off)",
            "rows/s",
            runs["bare"],
            runs["floor"],
            "≥ 0.8",
        ),
        Row(
            f"single-row INSERT, {CLIENTS} clients, {wallets}",
            "app-side sync (INSERT + UPDATE wallet + UPDATE profile)",
            "rows/s",
            runs["app"],
            runs["trigger"],
            "≥ 1.5",
        ),
        *(
            Row(
                f"1,000-row INSERT … SELECT over {over}, {how}, 2 clients",
                "bare",
                "rows/s",
                [t * 1000 for t in runs[f"{name} bare"]],
                [t * 1000 for t in runs[f"{name} {path}"]],
                target,
            )
            for name, over, target in (
                ("bulk", "distinct wallets", "≥ 0.45"),
                ("shared", "100 wallets, 10 rows each", "≥ 0.67"),
                (
                    "disjoint",
                    "distinct wallets, each client in its own half of the wallets",
                    "≥ 0.45",
                ),
            )
            for path, how in (
                ("plain", "a plain INSERT (no opt-in)"),
                ("batch", "into `economy.transaction_batch`"),
            )
            if not (name == "disjoint" and path == "batch")
        ),
        Row(
            "floor of any sync that gives each row its balance_after (a row trigger that only"
            " sets it), 1,000-row INSERT … SELECT over 100 wallets, 2 clients",
            "bare",
            "rows/s",
            [t * 1000 for t in runs["shared bare"]],
            [t * 1000 for t in runs["shared row floor"]],
            "",
        ),
        Row(
            "floor of a staged set-based path (rows moved, one UPDATE per wallet and per"
            " profile, nothing else), 1,000-row INSERT … SELECT over 100 wallets, 2 clients",
            "bare",
            "rows/s",
            [t * 1000 for t in runs["shared bare"]],
            [t * 1000 for t in runs["shared batch floor"]],
            "",
        ),
        Row(
            f"COPY of {bench.scale['copy_rows']:,} rows into the ledger (no opt-in), {wallets}",
            "bare COPY into the ledger (sync triggers off)",
            "rows/s",
            runs["copy bare"],
            runs["copy plain"],
            "≥ 0.7",
        ),
        *(
            Row(
                f"{at}INSERT … SELECT of {bench.scale['one_wallet_rows']:,} rows into one"
                " wallet (no opt-in)",
                "the same with the sync triggers off",
                "s",
                runs[f"{prefix}one wallet bare"],
                runs[f"{prefix}one wallet plain"],
                "≤ 1.5",
            )
            for at, prefix in (("", ""), ("attached app tables: ", "attached "))
        ),
        Row(
            f"attached app tables: single-row INSERT, {CLIENTS} clients, {wallets}",
            "bare INSERT into the app's ledger (sync trigger off)",
            "rows/s",
            runs["attached bare"],
            runs["attached"],
            "≥ 0.8",
        ),
        Row(
            f"attached app tables: single-row INSERT, {CLIENTS} clients, {wallets}",
            "the same without the statement trigger (row trigger only)",
            "rows/s",
            runs["attached row trigger only"],
            runs["attached"],
            "",
        ),
        *(
            Row(
                f"attached app tables: 1,000-row INSERT … SELECT over {over}, a plain INSERT"
                " (no opt-in), 2 clients",
                "bare INSERT into the app's ledger (sync triggers off)",
                "rows/s",
                [t * 1000 for t in runs[f"attached {name} bare"]],
                [t * 1000 for t in runs[f"attached {name} plain"]],
                target,
            )
            for name, over, target in (
                ("bulk", "distinct wallets", "≥ 0.45"),
                ("shared", "100 wallets, 10 rows each", "≥ 0.67"),
                (
                    "disjoint",
                    "distinct wallets, each client in its own half of the wallets",
                    "≥ 0.45",
                ),
            )
        ),
        Row(
            f"attached app tables: COPY of {bench.scale['copy_rows']:,} rows (no opt-in),"
            f" {wallets}",
            "bare COPY into the app's ledger (sync triggers off)",
            "rows/s",
            runs["attached copy bare"],
            runs["attached copy plain"],
            "≥ 0.7",
        ),
        Row(
            f"attached app tables: one normal wallet, {CLIENTS} clients",
            "bare INSERT into the app's ledger on one wallet",
            "rows/s",
            runs["attached hot bare"],
            runs["attached hot"],
            "≥ 0.2",
        ),
        Row(
            "`transfer` from a random user to a house wallet marked hot, 2 clients",
            "the same into a normal house wallet",
            "transfers/s",
            runs["transfer to normal house, 2 clients"],
            runs["transfer to hot house, 2 clients"],
            "",
        ),
        Row(
            f"`transfer` from a random user to a house wallet marked hot, {CLIENTS} clients",
            "its two entries as one plain INSERT (synced: no pairing, no replay)",
            "transfers/s",
            runs["pair to hot house"],
            runs["transfer to hot house"],
            "≥ 0.8",
        ),
        Row(
            f"`transfer` between random users, {CLIENTS} clients, {wallets}",
            "its two entries as one bare INSERT (sync triggers off)",
            "transfers/s",
            runs["random pair bare"],
            runs["random transfer"],
            "≥ 0.4",
        ),
        Row(
            f"`transfer_many` of {MANY} transfers between random users, {CLIENTS} clients",
            "single `transfer` calls",
            "transfers/s",
            runs["random transfer"],
            [tps * MANY for tps in runs["transfer_many"]],
            "≥ 3",
        ),
        Row(
            f"single-row INSERT with metadata and a GIN index on it, {CLIENTS} clients",
            "the same without the index",
            "rows/s",
            runs["metadata"],
            runs["metadata indexed"],
            "",
        ),
    ]


def hot_update_share(bench: Bench) -> str:
    """How many of the cache rows' updates were HOT (no index entry written)."""
    return ", ".join(
        f"{name}: {hot:,} of {total:,}"
        for name, total, hot in bench.sql(
            "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            " WHERE schemaname = 'economy' AND relname IN ('wallet', 'profile') ORDER BY relname"
        )
    )


def next_multixact(bench: Bench) -> int:
    bench.sql("CHECKPOINT")  # pg_control's figure is the last checkpoint's
    return int(bench.sql("SELECT next_multixact_id FROM pg_control_checkpoint()").fetchone()[0])


def multixacts_per_row(bench: Bench) -> dict[str, float]:
    """MultiXacts created per row inserted, for each one-wallet scenario (row
    locks shared by several transactions, such as the foreign key checks of
    concurrent inserts, each need one; their member space must be vacuumed)."""
    found = {}
    for name, script, trigger in (
        ("bare INSERT on one wallet", INSERT_HOT, False),
        ("one normal wallet", INSERT_HOT, True),
        ("one wallet marked hot", INSERT_HOT_MARKED, True),
    ):
        rows_before = bench.sql("SELECT count(*) FROM economy.transaction").fetchone()[0]
        before = next_multixact(bench)
        bench.tps_with(script, CLIENTS, trigger)()
        created = next_multixact(bench) - before
        rows = bench.sql("SELECT count(*) FROM economy.transaction").fetchone()[0] - rows_before
        found[name] = created / rows
    return found


@contextmanager
def slow_flush_bench(scale: dict) -> Iterator[Bench]:
    """fresh_bench on a server whose disk flushes are SLOW_FLUSH_US slower."""
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "slowsync.so"
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(SLOWSYNC_SOURCE), "-ldl"],
            check=True,
        )
        os.chmod(tmp, 0o755)  # the server runs as another user when started by scripts/bench
        env = {"LD_PRELOAD": str(library), "SLOWSYNC_US": str(SLOW_FLUSH_US)}
        with fresh_bench(scale, scale["wallets"], env) as bench:
            bench.flush_env = env
            yield bench


def slow_flush_throughput(bench: Bench) -> list[Row]:
    runs = bench.interleaved(flush_dependent_runs(bench))
    wallets = f"{bench.scale['wallets']:,} wallets"
    at = f"at +{SLOW_FLUSH_US / 1000:g} ms per flush: "
    return flush_dependent_rows(runs, wallets, marked_hot_target="≥ 0.9", at=at)


def load_scan_data(conn: psycopg.Connection, wallets: int, entries: int) -> None:
    """`entries` ledger rows over wallets 1..N, loaded with every trigger off
    (session_replication_role = replica: no sync, no foreign key checks), the
    caches set from the sums, the ledger checkpointed, then 1 % more entries."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO economy.transaction (wallet_id, amount, kind)"
            " SELECT 1 + g %% %s, 1.25, (ARRAY['prize', 'fee', 'refund'])[1 + g %% 3]"
            " FROM generate_series(1, %s) g",
            [wallets, entries],
        )
        conn.execute(
            "UPDATE economy.wallet w SET balance = t.balance FROM economy.ledger_totals t"
            " WHERE t.wallet_id = w.id"
        )
        conn.execute(
            "UPDATE economy.profile p"
            " SET balance = t.balance, lifetime_earnings = t.lifetime_earnings"
            " FROM economy.ledger_totals t WHERE t.wallet_id = p.user_id"
        )
    advance_checkpoint(conn)  # what a real reconcile does first ...
    # ... then 1 % more entries arrive, synced as usual, in wallet order
    conn.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind)"
        " SELECT 1 + (random() * (%s - 1))::int AS w, 2.00, 'reward'"
        " FROM generate_series(1, %s) ORDER BY w",
        [wallets, entries // 100],
    )
    conn.execute("VACUUM ANALYZE")


def load_attached_scan_data(conn: psycopg.Connection, wallets: int, entries: int) -> None:
    """`entries` rows of the attached app's ledger, `entries // wallets` credits of 125
    on each of its wallets, loaded with every trigger off; its caches set to match;
    its ledger checkpoint advanced over them."""
    each = entries // wallets * 125
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO app_transaction (wallet_id, amount, reason)"
            " SELECT 1 + g %% %s, 125, 'prize' FROM generate_series(1, %s) g",
            [wallets, wallets * (entries // wallets)],
        )
        conn.execute("UPDATE app_wallet SET cached_balance = %s", [each])
        conn.execute("UPDATE app_profile SET balance = %s, lifetime_earnings = %s", [each, each])
    conn.execute("VACUUM ANALYZE app_transaction, app_wallet, app_profile")
    advance_checkpoint(conn, "bench")
    conn.execute("ANALYZE economy.attached_ledger_checkpoint")


BARE_GROUP_BY = "SELECT wallet_id, sum(amount) FROM economy.transaction GROUP BY wallet_id"
ATTACHED_BARE_GROUP_BY = "SELECT wallet_id, sum(amount) FROM app_transaction GROUP BY wallet_id"
ATTACHED_DRIFT_SCAN = "SELECT * FROM economy.balance_drift(attachment => 'bench')"
DRIFT_SCAN = "SELECT * FROM economy.balance_drift()"
FULL_AUDIT = "SELECT * FROM economy.audit_ledger_checkpoint()"
# The floors of those two, with their settings (work_mem, no JIT): a check of
# every cache against the checkpoint reads and joins every wallet, profile and
# checkpoint row, whatever the ledger holds; an audit reads each entry's kind,
# which is in the ledger's heap, not in the index the bare aggregate reads.
CACHES_JOINED = (
    "SELECT count(*) FROM economy.profile p"
    " JOIN economy.wallet w ON w.user_id = p.user_id"
    " LEFT JOIN economy.ledger_checkpoint c ON c.wallet_id = w.id"
    " WHERE w.balance IS DISTINCT FROM c.balance OR p.balance IS DISTINCT FROM c.balance"
    " OR p.lifetime_earnings IS DISTINCT FROM c.lifetime_earnings"
)
LEDGER_WITH_KINDS = (
    "SELECT wallet_id, sum(amount), sum(amount) FILTER (WHERE kind IN ('prize', 'reward'))"
    " FROM economy.transaction GROUP BY wallet_id"
)


def timed(conn: psycopg.Connection, query: str, settings: bool = False) -> float:
    """Seconds to run query; with settings, under the drift check's own."""
    with conn.transaction():
        if settings:
            conn.execute("SET LOCAL work_mem = '256MB'")
            conn.execute("SET LOCAL jit = off")
        started = time.perf_counter()
        conn.execute(query).fetchall()
        return time.perf_counter() - started


def drift_scan(bench: Bench) -> tuple[list[Row], str]:
    bench.sql("LOAD 'auto_explain'")
    runs = bench.interleaved(
        {
            "bare": lambda: timed(bench.conn, BARE_GROUP_BY),
            "drift": lambda: timed(bench.conn, DRIFT_SCAN),
            "audit": lambda: timed(bench.conn, FULL_AUDIT),
            "caches joined": lambda: timed(bench.conn, CACHES_JOINED, settings=True),
            "ledger with kinds": lambda: timed(bench.conn, LEDGER_WITH_KINDS, settings=True),
            "attached bare": lambda: timed(bench.conn, ATTACHED_BARE_GROUP_BY),
            "attached drift": lambda: timed(bench.conn, ATTACHED_DRIFT_SCAN),
        }
    )
    plans = []
    for query in (BARE_GROUP_BY, DRIFT_SCAN):
        for setting in (
            "log_min_duration = 0",
            "log_analyze = on",
            "log_buffers = on",
            "log_nested_statements = on",
        ):
            bench.sql(f"SET auto_explain.{setting}")
        bench.sql("SET client_min_messages = log")
        notices = []

        def keep(diagnostic, notices=notices):
            notices.append(diagnostic.message_primary)

        bench.conn.add_notice_handler(keep)
        bench.sql(query).fetchall()
        bench.conn.remove_notice_handler(keep)
        bench.sql("RESET ALL")
        plans.append(f"-- {query}\n" + "\n\n".join(notices))
    scale = f"{bench.scale['scan_wallets']:,} wallets, {bench.scale['scan_entries']:,} entries"
    rows = [
        Row(
            f"drift scan `balance_drift()` (checkpointed), {scale}",
            "one bare `GROUP BY wallet_id` sum",
            "s",
            runs["bare"],
            runs["drift"],
            "≤ 0.15",
        ),
        Row(
            f"full audit `audit_ledger_checkpoint()`, {scale}",
            "one bare `GROUP BY wallet_id` sum",
            "s",
            runs["bare"],
            runs["audit"],
            "≤ 1.1",
        ),
        Row(
            f"floor of a full check: every wallet, profile and checkpoint row joined, {scale}",
            "one bare `GROUP BY wallet_id` sum",
            "s",
            runs["bare"],
            runs["caches joined"],
            "",
        ),
        Row(
            f"floor of a full audit: a bare sum that reads each entry's kind, {scale}",
            "one bare `GROUP BY wallet_id` sum",
            "s",
            runs["bare"],
            runs["ledger with kinds"],
            "",
        ),
        Row(
            f"attached app tables: drift scan `balance_drift(attachment => …)`"
            f" (checkpointed), {scale}",
            "one bare `GROUP BY wallet_id` sum over the app's ledger",
            "s",
            runs["attached bare"],
            runs["attached drift"],
            "≤ 0.5",
        ),
    ]
    return rows, "\n\n".join(plans)


# Runs a command and writes its peak resident memory (KiB) to stderr.
PEAK_RSS = Path(__file__).resolve().parent.parent / "lib" / "peak_rss.py"


def reconcile_memory(bench: Bench) -> tuple[int, bool, float]:
    """Peak RSS (KiB) of `economy-sync reconcile --apply --all` on a terminal,
    whether it drew its progress bar, and how long it took."""
    command = [
        str(Path(sys.executable).with_name("economy-sync")),
        "reconcile",
        "--apply",
        "--all",
        "--dsn",
        bench.server.dsn,
    ]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(PEAK_RSS), "--terminal", *command],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    elapsed = time.perf_counter() - started
    peak = int(done.stderr.strip().splitlines()[-1])
    return peak, "repairing" in done.stdout, elapsed


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.platform()}"


def server_settings(bench: Bench) -> str:
    """What the server says it runs with (SHOW), not what was asked for."""
    return ", ".join(
        f"{name}={bench.sql(f'SHOW {name}').fetchone()[0]}" for name in REPORTED_SETTINGS
    )


def flush_latency(bench: Bench) -> str:
    """pg_test_fsync's fdatasync figure for the disk the server writes to
    (with the server's preloaded slowsync, if any)."""
    done = subprocess.run(
        [
            str(Path(bench.server.pg_ctl).with_name("pg_test_fsync")),
            "-s",
            "1",
            "-f",
            str(bench.server.workdir / "fsync.test"),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **bench.flush_env},
    )
    found = re.search(r"^\s+fdatasync\s+([\d.,]+) ops/sec\s+(\d+) usecs/op", done.stdout, re.M)
    return f"{found.group(2)} µs per fdatasync" if found else "unknown"


# docs/BENCHMARKS.md is written by hand before the first of these headings (a
# summary) and from the second on (the analysis): both kept as they are.
FIGURES = "## Figures of the last run"
HAND_WRITTEN = "## What the figures say, and what it would take"


def hand_written_parts() -> tuple[str, str]:
    """The summary at the top of the previous report, and its analysis at the end."""
    previous = (SOURCE_ROOT / "docs" / "BENCHMARKS.md").read_text()
    summary = previous.split("\n", 1)[1].split(FIGURES)[0].strip() if FIGURES in previous else ""
    analysis = previous[previous.index(HAND_WRITTEN) :] if HAND_WRITTEN in previous else ""
    return summary, analysis


def write_report(
    path: Path,
    rows: list[Row],
    plans: str,
    memory: tuple,
    multixacts: dict[str, float],
    hot_updates: str,
    version: str,
    settings: str,
    args,
) -> None:
    peak, progress, elapsed = memory
    summary, analysis = hand_written_parts()
    lines = [
        "# Benchmarks",
        "",
        summary,
        "",
        FIGURES,
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `scripts/bench/bench.py --scale {args.scale}`"
        " (reproduce: `scripts/bench/run`;"
        " it starts its own PostgreSQL).",
        "",
        f"- machine: {machine()}",
        f"- PostgreSQL: {version}; started with `{SERVER_SETTINGS}`; read back: {settings}",
        f'- rows marked "at +{SLOW_FLUSH_US / 1000:g} ms per flush": a second server with'
        " `scripts/bench/slowsync.c` preloaded (cloud-like flush latency)",
        f"- each figure: median of {args.repeats} runs of {args.seconds} s,"
        " the scenarios interleaved;"
        " the ratio is candidate median / baseline median, measured in the same run",
        "",
        "| scenario | baseline | baseline median | economy-sync median | ratio | target | holds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base, cand = statistics.median(row.baseline_runs), statistics.median(row.candidate_runs)
        lines.append(
            f"| {row.scenario} | {row.baseline} | {row.show(base)} | {row.show(cand)} |"
            f" {row.ratio:.2f}× |"
            f" {row.target + '×' if row.target else 'a floor'} | {row.holds()} |"
        )
    lines.append(
        f"| `economy-sync reconcile --all`, {args.scan_wallets:,} wallets | — | — |"
        f" peak RSS {peak / 1024:.0f} MiB, {elapsed:.0f} s,"
        f" progress bar {'shown' if progress else 'NOT shown'} | — | < 150 MiB, progress shown |"
        f" {'yes' if peak < 150 * 1024 and progress else '**no**'} |"
    )
    lines += ["", f"MultiXacts created per row inserted, {CLIENTS} clients on one wallet:", ""]
    lines += [f"- {name}: {per_row:.2f}" for name, per_row in multixacts.items()]
    lines += [
        "",
        f"HOT updates of the cache rows over the run (pg_stat_user_tables): {hot_updates}",
    ]
    lines += ["", "Raw runs:", ""]
    for row in rows:
        lines.append(
            f"- {row.scenario} / {row.baseline}: baseline {row.baseline_runs}, "
            f"economy-sync {row.candidate_runs}"
        )
    lines += [
        "",
        "## Plans of the drift scan (EXPLAIN ANALYZE, BUFFERS via auto_explain)",
        "",
        "```",
        plans,
        "```",
        "",
    ]
    lines += [analysis]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="full")
    parser.add_argument("--output", type=Path, default=SOURCE_ROOT / "docs" / "BENCHMARKS.md")
    args = parser.parse_args()
    scale = SCALES[args.scale]
    args.repeats, args.seconds, args.scan_wallets = (
        scale["repeats"],
        scale["seconds"],
        scale["scan_wallets"],
    )

    with fresh_bench(scale, scale["wallets"]) as bench:
        version = bench.sql("SHOW server_version").fetchone()[0]
        settings = f"{server_settings(bench)}; disk: {flush_latency(bench)}"
        print(f"server: {settings}", flush=True)
        print("throughput ...", flush=True)
        rows = throughput(bench)
        print("multixacts ...", flush=True)
        multixacts = multixacts_per_row(bench)
        bench.sql("SELECT pg_stat_force_next_flush()")
        hot_updates = hot_update_share(bench)

    with slow_flush_bench(scale) as bench:
        slow_disk = flush_latency(bench)
        print(f"slow-flush server: {server_settings(bench)}; disk: {slow_disk}", flush=True)
        rows += slow_flush_throughput(bench)
        settings += f"; the slow-flush server's disk: {slow_disk}"

    with fresh_bench(scale, scale["scan_wallets"]) as bench:
        print("drift scan data ...", flush=True)
        load_scan_data(bench.conn, scale["scan_wallets"], scale["scan_entries"])
        load_attached_scan_data(bench.conn, scale["scan_wallets"], scale["scan_entries"])
        print("drift scan ...", flush=True)
        scan_rows, plans = drift_scan(bench)
        rows += scan_rows
        bench.sql("UPDATE economy.wallet SET balance = balance + 1 WHERE id % 100 = 0")
        print("reconcile memory ...", flush=True)
        memory = reconcile_memory(bench)

    write_report(args.output, rows, plans, memory, multixacts, hot_updates, version, settings, args)
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
