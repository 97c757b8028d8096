"""Soak with faults: writers doing random operations (one wallet hot, some
writes as set-based batches) while a reconcile loops beside them, backends
are killed, statements time out and the server is crashed (immediate stop)
and restarted. Each writer records what was acknowledged; at the end every
acknowledged entry must be there, nothing unacknowledged may be
half-applied, every balance must equal what the recorded operations add up
to, and drift must be zero.

    .venv/bin/python scripts/soak/soak.py --seconds 60 --crashes 2

Runs on its own throwaway PostgreSQL (as an unprivileged user); bounded in
time and operations; prints a summary; exit code 0 when every check passed.
"""

import argparse
import contextlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
from psycopg import errors

from economy_sync import advance_checkpoint, balance_drift, migrate
from economy_sync.throwaway import ThrowawayServer

START_BALANCE = Decimal("500.00")
OVERDRAFT = Decimal("25.00")
UNKNOWN = "unknown"  # the connection died mid-call: committed or not, the end tells


@dataclass
class Operation:
    key: str  # idempotency key of its entries (reversals: found by reverses_id)
    effects: dict[int, Decimal]  # wallet -> amount
    kind: str
    outcome: str  # acknowledged | unknown
    reverses: int | None = None
    reversed: bool = False


@dataclass
class Stats:
    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def fail(self, message: str) -> None:
        with self.lock:
            self.failures.append(message)


def connect(dsn: str, name: str, deadline: float) -> psycopg.Connection | None:
    """Connect, retrying while the server restarts; None once past the deadline."""
    while time.monotonic() < deadline + 30:
        try:
            return psycopg.connect(dsn, autocommit=True, application_name=name, connect_timeout=5)
        except psycopg.OperationalError:
            time.sleep(0.2)
    return None


class SoakThread(threading.Thread):
    """Repeats step(conn) until the deadline, reconnecting after a lost
    connection; any other error is a failure of the soak."""

    def __init__(self, name, dsn, deadline, stats):
        super().__init__(name=name)
        self.dsn, self.deadline, self.stats = dsn, deadline, stats

    def more(self) -> bool:
        return time.monotonic() < self.deadline

    def run(self) -> None:
        try:
            conn = connect(self.dsn, self.name, self.deadline)
            while conn and self.more():
                try:
                    self.step(conn)
                except psycopg.OperationalError:  # killed backend or crashed server
                    self.stats.count("connections lost")
                    conn.close()
                    conn = connect(self.dsn, self.name, self.deadline)
            if conn:
                conn.close()
        except Exception as error:
            self.stats.fail(f"{self.name} stopped: {error!r}")

    def step(self, conn: psycopg.Connection) -> None:
        raise NotImplementedError


class Writer(SoakThread):
    def __init__(self, number, dsn, wallets, deadline, max_operations, stats, seed):
        super().__init__(f"soak-writer-{number}", dsn, deadline, stats)
        self.number, self.wallets, self.max_operations = number, wallets, max_operations
        self.rng = random.Random(seed + number)
        self.operations: list[Operation] = []
        self.sequence = 0

    def new_key(self) -> str:
        self.sequence += 1
        return f"w{self.number}-{self.sequence}"

    def more(self) -> bool:
        return super().more() and self.sequence < self.max_operations

    def call(
        self,
        conn,
        operation: Operation,
        query: str,
        params,
        refusals=(errors.CheckViolation, errors.QueryCanceled),
    ) -> list | None:
        """Run one call; record its outcome; None when refused (nothing written)."""
        timeout = self.rng.random() < 0.03
        try:
            if timeout:
                conn.execute("SET statement_timeout = '1ms'")
            rows = conn.execute(query, params).fetchall()
        except refusals as error:
            self.stats.count(f"refused: {type(error).__name__}")
            return None
        except psycopg.OperationalError:
            operation.outcome = UNKNOWN
            self.operations.append(operation)
            raise
        finally:
            if timeout and not conn.closed:
                with contextlib.suppress(psycopg.OperationalError):
                    conn.execute("RESET statement_timeout")
        operation.outcome = "acknowledged"
        self.operations.append(operation)
        self.stats.count(f"acknowledged: {operation.kind}")
        return rows

    def step(self, conn) -> None:
        a, b = self.rng.sample(self.wallets, 2)
        amount = Decimal(self.rng.randint(1, 6000)) / 100
        key = self.new_key()
        self.stats.count("operations")
        match self.rng.choice(
            ["credit", "debit", "debit", "transfer", "batch", "reverse", "retry", "invalid"]
        ):
            case "credit":
                kind = self.rng.choice(["prize", "reward", "refund"])
                op = Operation(key, {a: amount}, kind, "")
                self.call(
                    conn,
                    op,
                    "SELECT id FROM economy.post_transaction(%s, %s, %s, %s)",
                    [a, amount, kind, key],
                )
            case "debit":  # some overdraw and are refused
                op = Operation(key, {a: -amount * 4}, "purchase", "")
                query = "SELECT id FROM economy.post_transaction(%s, %s, 'purchase', %s)"
                self.call(conn, op, query, [a, -amount * 4, key])
            case "transfer":
                op = Operation(key, {a: -amount, b: amount}, "transfer", "")
                self.call(
                    conn, op, "SELECT id FROM economy.transfer(%s, %s, %s, %s)", [a, b, amount, key]
                )
            case "batch":  # one statement, set-based; the debit may overdraw: all refused
                op = Operation(key, {a: amount, b: -amount * 3}, "batch", "")
                self.call(
                    conn,
                    op,
                    "INSERT INTO economy.transaction_batch"
                    " (wallet_id, amount, kind, idempotency_key)"
                    " VALUES (%s, %s, 'adjustment', %s), (%s, %s, 'adjustment', %s)"
                    " RETURNING position",
                    [a, amount, key, b, -amount * 3, key],
                )
            case "reverse":
                self.reverse_one(conn, key)
            case "retry":
                self.retry_one(conn)
            case "invalid":
                try:
                    conn.execute(
                        "SELECT economy.post_transaction(%s, 0.005, 'prize', %s)", [a, key]
                    )
                    self.stats.fail(f"{key}: an amount of 0.005 was accepted")
                except errors.CheckViolation:
                    self.stats.count("refused: invalid input")

    def reverse_one(self, conn, key: str) -> None:
        candidates = [
            op
            for op in self.operations
            if op.outcome == "acknowledged"
            and op.kind not in ("transfer", "reversal", "batch")
            and op.reverses is None
            and not op.reversed
        ]
        if not candidates:
            return
        original = self.rng.choice(candidates)
        ((wallet, amount),) = original.effects.items()
        entry = conn.execute(
            "SELECT id FROM economy.transaction WHERE wallet_id = %s AND idempotency_key = %s",
            [wallet, original.key],
        ).fetchone()
        if entry is None:
            self.stats.fail(f"{original.key}: acknowledged entry missing")
            return
        op = Operation(key, {wallet: -amount}, "reversal", "", reverses=entry[0])
        # already reversed, when an earlier attempt's outcome was unknown
        refusals = (errors.CheckViolation, errors.QueryCanceled, errors.UniqueViolation)
        try:
            rows = self.call(
                conn, op, "SELECT id FROM economy.reverse_transaction(%s)", [entry[0]], refusals
            )
        except psycopg.OperationalError:
            original.reversed = True  # outcome unknown: never again, the end check tells
            raise
        if rows:
            original.reversed = True

    def retry_one(self, conn) -> None:
        """Replay an acknowledged post with the same key and payload: must change nothing."""
        done = [
            op
            for op in self.operations
            if op.outcome == "acknowledged" and op.kind in ("prize", "reward", "refund")
        ]
        if not done:
            return
        op = self.rng.choice(done)
        ((wallet, amount),) = op.effects.items()
        conn.execute(
            "SELECT economy.post_transaction(%s, %s, %s, %s)", [wallet, amount, op.kind, op.key]
        )
        self.stats.count("idempotent retries")
        copies = conn.execute(
            "SELECT count(*) FROM economy.transaction"
            " WHERE wallet_id = %s AND idempotency_key = %s",
            [wallet, op.key],
        ).fetchone()[0]
        if copies != 1:
            self.stats.fail(f"{op.key}: {copies} entries after an idempotent retry")


class Forger(SoakThread):
    """An attacker beside the writers: ledger ids at or below the safe horizon
    (as the superuser), chosen ids and created_at (as economy_app), and
    reversals of a single transfer leg, two forgers racing for the same
    transfers. Every forgery must be refused; a leg reversal must reverse the
    whole transfer (it is recorded like a writer's operation and checked at
    the end)."""

    REFUSED = (errors.CheckViolation, errors.UniqueViolation, errors.QueryCanceled)

    def __init__(self, number, dsn, wallets, deadline, stats, seed):
        super().__init__(f"soak-forger-{number}", dsn, deadline, stats)
        self.wallets = wallets
        self.rng = random.Random(seed * 1000 + number)
        self.operations: list[Operation] = []
        self.sequence = 0

    def step(self, conn) -> None:
        self.stats.count("forgeries tried")
        match self.rng.choice(["below_horizon", "chosen_id", "backdated", "parked", "leg", "leg"]):
            case "below_horizon":
                safe = conn.execute("SELECT safe_up_to FROM economy.ledger_horizon").fetchone()[0]
                if safe:
                    self.forge(
                        conn,
                        "INSERT INTO economy.transaction (id, wallet_id, amount, kind)"
                        " OVERRIDING SYSTEM VALUE VALUES (%s, %s, -1, 'fee')",
                        [self.rng.randint(1, safe), self.rng.choice(self.wallets)],
                        errors.CheckViolation,
                    )
            case "chosen_id":
                self.forge_as_app(
                    conn,
                    "INSERT INTO economy.transaction (id, wallet_id, amount, kind)"
                    " OVERRIDING SYSTEM VALUE VALUES (%s, %s, 1, 'prize')",
                    [self.rng.randint(1, 10**9), self.rng.choice(self.wallets)],
                )
            case "backdated":
                self.forge_as_app(
                    conn,
                    "INSERT INTO economy.transaction (wallet_id, amount, kind, created_at)"
                    " VALUES (%s, 1, 'prize', now() - interval '1 year')",
                    [self.rng.choice(self.wallets)],
                )
            case "parked":  # money made or lost by writing the hot wallets' parked credits
                self.forge_as_app(
                    conn,
                    self.rng.choice(
                        [
                            "INSERT INTO economy.hot_credit VALUES (%s, 1000, 0)",
                            "DELETE FROM economy.hot_credit WHERE wallet_id = %s",
                            "DELETE FROM economy.transaction_batch WHERE wallet_id = %s",
                        ]
                    ),
                    [self.rng.choice(self.wallets)],
                )
            case "leg":
                self.reverse_a_leg(conn)

    def forge(self, conn, query, params, expected) -> None:
        try:
            conn.execute(query, params)
        except expected:
            self.stats.count("forgeries refused")
            return
        self.stats.fail(f"{self.name}: a forgery was accepted: {query % tuple(params)}")

    def forge_as_app(self, conn, query, params) -> None:
        conn.execute("SET ROLE economy_app")
        try:
            self.forge(conn, query, params, errors.InsufficientPrivilege)
        finally:
            conn.execute("RESET ROLE")

    def reverse_a_leg(self, conn) -> None:
        """Reverse one leg of one of the oldest unreversed transfers, as the app."""
        transfer = conn.execute(
            "SELECT d.id, c.id, d.wallet_id, c.wallet_id, c.amount"
            " FROM economy.transaction c JOIN economy.transaction d ON d.id = c.transfer_debit_id"
            " WHERE NOT EXISTS (SELECT FROM economy.transaction r WHERE r.reverses_id = c.id)"
            " ORDER BY c.id LIMIT 3"
        ).fetchall()
        if not transfer:
            return
        debit, credit, source, target, amount = self.rng.choice(transfer)
        leg = self.rng.choice([debit, credit])
        self.sequence += 1
        # reverses: the transfer (its debit leg), whichever leg is named
        op = Operation(
            f"{self.name}-{self.sequence}", {source: amount, target: -amount}, "reversal", "",
            reverses=debit,
        )  # fmt: skip
        conn.execute("SET ROLE economy_app")
        try:
            conn.execute("SELECT economy.reverse_transaction(%s)", [leg])
        except self.REFUSED as error:  # already reversed by the other forger, or overdraws
            self.stats.count(f"leg reversals refused: {type(error).__name__}")
            return
        except psycopg.OperationalError:
            op.outcome = UNKNOWN
            self.operations.append(op)
            raise
        finally:
            if not conn.closed:
                with contextlib.suppress(psycopg.OperationalError):
                    conn.execute("RESET ROLE")
        op.outcome = "acknowledged"
        self.operations.append(op)
        self.stats.count("transfer legs reversed")


class Reconciler(SoakThread):
    """Loops a real reconcile, advancing the ledger checkpoint before each; with
    the triggers always on, it must never fix anything."""

    def __init__(self, dsn, deadline, stats):
        super().__init__("soak-reconciler", dsn, deadline, stats)

    def step(self, conn) -> None:
        if advance_checkpoint(conn) is None:
            self.stats.count("checkpoint advances skipped (ledger busy)")
        fixed = conn.execute("SELECT * FROM economy.reconcile_economy(dry_run => false)").fetchall()
        self.stats.count("reconcile runs")
        if fixed:
            self.stats.fail(f"reconcile fixed values the triggers keep: {fixed[:3]}")


def inject_faults(server, deadline, crashes, stats, rng) -> None:
    """Terminate random writer backends every so often; crash the server `crashes` times."""
    start = time.monotonic()
    crash_times = sorted(
        start + (deadline - start) * (i + 1) / (crashes + 1) for i in range(crashes)
    )
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.6))
        if crash_times and time.monotonic() >= crash_times[0]:
            crash_times.pop(0)
            server.crash()
            stats.count("server crashes (immediate stop)")
            time.sleep(0.5)
            server.restart()
            continue
        try:
            with psycopg.connect(server.dsn, autocommit=True, connect_timeout=5) as admin:
                killed = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'soak-%%' AND random() < 0.3"
                ).fetchone()[0]
            stats.count("backends terminated", killed)
        except psycopg.OperationalError:
            pass


def one_per_transfer(forgers: list[Forger], stats: Stats) -> list[Operation]:
    """At most one reversal of a transfer can commit: count it once, whichever
    forger's attempt it was (the acknowledged one, or one of unknown outcome)."""
    chosen: dict[int, Operation] = {}
    for op in (op for forger in forgers for op in forger.operations):
        kept = chosen.get(op.reverses)
        if kept and kept.outcome == op.outcome == "acknowledged":
            stats.fail(f"transfer {op.reverses}: reversed twice")
        if kept is None or op.outcome == "acknowledged":
            chosen[op.reverses] = op
    return list(chosen.values())


def verify(dsn: str, writers: list[Writer], forgers: list[Forger], stats: Stats) -> None:
    """The end checks: acknowledged present, unknown all-or-nothing, balances
    exact, total conserved, no drift, the checkpoint equal to a full sum."""
    operations = [op for writer in writers for op in writer.operations]
    operations += one_per_transfer(forgers, stats)
    expected: dict[int, Decimal] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        wallets = conn.execute("SELECT id FROM economy.wallet").fetchall()
        for (wallet,) in wallets:
            expected[wallet] = START_BALANCE
        for op in operations:
            if op.reverses is not None:
                present = conn.execute(
                    "SELECT count(*) FROM economy.transaction WHERE reverses_id = %s",
                    [op.reverses],
                ).fetchone()[0]
                legs = len(op.effects) if present else 0
            else:
                legs = conn.execute(
                    "SELECT count(*) FROM economy.transaction"
                    " WHERE idempotency_key = %s AND wallet_id = ANY(%s)",
                    [op.key, list(op.effects)],
                ).fetchone()[0]
            stats.count("invariant checks")
            if op.outcome == "acknowledged" and legs != len(op.effects):
                stats.fail(f"{op.key}: acknowledged but {legs}/{len(op.effects)} entries present")
            elif legs not in (0, len(op.effects)):
                stats.fail(f"{op.key}: half-applied ({legs}/{len(op.effects)} entries)")
            if legs:
                stats.count(
                    "unknown outcome: committed"
                    if op.outcome == UNKNOWN
                    else "acknowledged and present"
                )
                for wallet, amount in op.effects.items():
                    expected[wallet] += amount
            elif op.outcome == UNKNOWN:
                stats.count("unknown outcome: not committed")
        for wallet, exact in conn.execute(
            "SELECT w.id, economy.wallet_balance(w.id) FROM economy.wallet w"
        ).fetchall():
            stats.count("invariant checks")
            if exact != expected[wallet]:
                stats.fail(f"wallet {wallet}: exact balance {exact}, expected {expected[wallet]}")
        conn.execute("SELECT economy.fold_hot_wallets()")  # then the caches are exact too
        rows = conn.execute(
            "SELECT w.id, w.balance, p.balance, w.overdraft_limit FROM economy.wallet w"
            " JOIN economy.profile p USING (user_id)"
        ).fetchall()
        for wallet, wallet_balance, profile_balance, limit in rows:
            stats.count("invariant checks")
            if not wallet_balance == profile_balance == expected[wallet]:
                stats.fail(
                    f"wallet {wallet}: {wallet_balance} (profile {profile_balance}),"
                    f" expected {expected[wallet]}"
                )
            if wallet_balance < -limit:
                stats.fail(f"wallet {wallet}: {wallet_balance} below -{limit}")
        stats.count("invariant checks")
        total = conn.execute("SELECT sum(balance) FROM economy.wallet").fetchone()[0]
        if total != sum(expected.values()):
            stats.fail(f"total money {total}, expected {sum(expected.values())}")
        unexplained = conn.execute(
            "SELECT count(*) FROM economy.transaction WHERE idempotency_key IS NULL"
            " AND reverses_id IS NULL AND memo IS DISTINCT FROM 'opening balance'"
        ).fetchone()[0]
        if unexplained:
            stats.fail(f"{unexplained} ledger entries no operation accounts for")
        drift = len(balance_drift(conn))
        stats.count("invariant checks")
        if drift:
            stats.fail(f"{drift} drifted cache fields at the end")
        audit = conn.execute("SELECT count(*) FROM economy.audit_ledger_checkpoint()").fetchone()[0]
        stats.count("invariant checks")
        if audit:
            stats.fail(f"{audit} checkpoint totals differ from a full sum of the ledger")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--wallets", type=int, default=12)
    parser.add_argument("--forgers", type=int, default=2, help="attackers beside the writers")
    parser.add_argument("--crashes", type=int, default=1, help="immediate stops and restarts")
    parser.add_argument("--max-operations", type=int, default=100_000, help="per writer")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    stats = Stats()
    started = time.monotonic()
    with ThrowawayServer("soak") as server:
        migrate.upgrade(server.dsn)
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            wallets = [
                conn.execute("SELECT economy.open_wallet(%s, %s)", [user, OVERDRAFT]).fetchone()[0]
                for user in range(1, args.wallets + 1)
            ]
            for wallet in wallets:
                conn.execute(
                    "SELECT economy.post_transaction("
                    "%s, %s, 'adjustment', memo => 'opening balance')",
                    [wallet, START_BALANCE],
                )
            conn.execute("SELECT economy.set_hot(%s)", [wallets[0]])  # a treasury
        deadline = time.monotonic() + args.seconds
        writers = [
            Writer(n, server.dsn, wallets, deadline, args.max_operations, stats, args.seed)
            for n in range(args.writers)
        ]
        forgers = [
            Forger(n, server.dsn, wallets, deadline, stats, args.seed) for n in range(args.forgers)
        ]
        reconciler = Reconciler(server.dsn, deadline, stats)
        threads = [*writers, *forgers, reconciler]
        for thread in threads:
            thread.start()
        inject_faults(server, deadline, args.crashes, stats, random.Random(args.seed))
        for thread in threads:
            thread.join()
        verify(server.dsn, writers, forgers, stats)

    print(
        f"soak: {time.monotonic() - started:.0f} s, {args.writers} writers,"
        f" {args.forgers} forgers, {args.wallets} wallets"
    )
    for name, value in sorted(stats.counts.items()):
        print(f"  {name}: {value}")
    for failure in stats.failures[:20]:
        print(f"  FAILED: {failure}")
    print("soak result: " + ("PASS" if not stats.failures else f"FAIL ({len(stats.failures)})"))
    return 0 if not stats.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
