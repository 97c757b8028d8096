"""The Python API: each function is one call of the SQL in sql/, on a psycopg 3
connection, returning plain typed values (Decimal for money).

    >>> with psycopg.connect(dsn) as conn:
    ...     get_balance_drift(conn, wallet_id=7)
    []
    ...     recompute_lifetime_earnings(conn, wallet_id=7)
    Decimal('125.00')
"""

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
from psycopg import errors
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

EARNINGS_FIELD = "lifetime_earnings"  # wallet.… and profile.…
# The attachment name of the package's own tables (as attachment=None).
OWN_TABLES = "economy"
# Errors after which a reconcile batch is skipped (and counted) rather than the
# whole run stopped: re-running later is safe.
RETRYABLE_ERRORS = (errors.DeadlockDetected, errors.LockNotAvailable, errors.QueryCanceled)


class WalletNotFound(LookupError):
    pass


@dataclass(frozen=True)
class DriftRow:
    """A cached field that disagrees with the ledger (`economy.balance_drift`);
    user_id is None for an attached ownerless wallet."""

    user_id: int | None
    wallet_id: int | None
    field: str
    cached_value: Decimal
    ledger_value: Decimal


@dataclass(frozen=True)
class ReconcileRow(DriftRow):
    """A drift row of `economy.reconcile_economy`; fixed is False in a dry run."""

    fixed: bool


@dataclass(frozen=True)
class DriftCount:
    """How many fields of an attachment drifted (`economy.drift_summary`)."""

    attachment: str
    field: str
    drifted: int


@dataclass(frozen=True)
class CheckpointMismatch:
    """A checkpointed total that differs from a full sum of the ledger
    (`economy.audit_ledger_checkpoint`)."""

    wallet_id: int
    field: str
    checkpoint_value: Decimal
    ledger_value: Decimal


@dataclass(frozen=True)
class Hold:
    """A row of `economy.wallet_hold`."""

    id: int
    wallet_id: int
    amount: Decimal
    status: str  # held | captured | released | expired
    expires_at: datetime | None
    created_at: datetime
    idempotency_key: str | None
    memo: str | None
    captured_entry_id: int | None


@dataclass(frozen=True)
class LedgerEntry:
    """A row of `economy.transaction`."""

    id: int
    wallet_id: int
    amount: Decimal
    kind: str
    idempotency_key: str | None
    reverses_id: int | None
    memo: str | None
    created_at: datetime
    transfer_debit_id: int | None
    balance_after: Decimal | None
    # applied with the other entries of its (multi-row) statement, at its end
    applied_at_statement_end: bool
    metadata: dict | list | None  # the app's jsonb: an order id, a match id


@dataclass
class ReconcileSummary:
    dry_run: bool
    # every fix of the run is logged under it in economy.reconcile_log
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    processed: int = 0  # users (profile and wallet) examined
    balance_fixes: int = 0  # drifted balance fields: fixed, or to fix in a dry run
    earnings_fixes: int = 0  # drifted lifetime_earnings fields
    errors: int = 0  # batches skipped after a lock timeout or deadlock
    # a real run over all users first advances the ledger checkpoint; True when
    # in-flight inserts held the ledger too long for that (run again later)
    checkpoint_skipped: bool = False
    batches: int = 0
    rows: list[ReconcileRow] = field(default_factory=list)  # the first max_rows
    rows_omitted: int = 0

    @property
    def drift_found(self) -> int:
        return self.balance_fixes + self.earnings_fixes


@contextmanager
def _known_wallet(wallet_id: int) -> Iterator[None]:
    """The SQL's no_data_found for an unknown wallet, as WalletNotFound."""
    try:
        yield
    except errors.NoDataFound:
        raise WalletNotFound(f"wallet {wallet_id} does not exist") from None


def _wallet_owner(conn: psycopg.Connection, wallet_id: int, attachment: str | None) -> int | None:
    """The wallet's owner key (None for an ownerless attached wallet)."""
    with _known_wallet(wallet_id):
        return conn.execute(
            "SELECT economy.wallet_owner(%(wallet_id)s::bigint,"
            " attachment => %(attachment)s::text)",
            {"wallet_id": wallet_id, "attachment": attachment},
        ).fetchone()[0]


@contextmanager
def _transaction(conn: psycopg.Connection, lock_timeout: str) -> Iterator[None]:
    """A transaction whose lock waits give up after lock_timeout."""
    with conn.transaction():
        conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", [lock_timeout])
        yield


def _reconcile_users(
    conn: psycopg.Connection,
    user_ids: list[int | None],
    dry_run: bool,
    run_id: str | None = None,
    attachment: str | None = None,
) -> list[ReconcileRow]:
    """One reconcile_economy call; the caller holds the transaction."""
    with conn.cursor(row_factory=class_row(ReconcileRow)) as cur:
        return cur.execute(
            "SELECT * FROM economy.reconcile_economy(dry_run => %(dry_run)s::boolean,"
            " user_ids => %(user_ids)s::bigint[], run_id => %(run_id)s::uuid,"
            " attachment => %(attachment)s::text)",
            {"dry_run": dry_run, "user_ids": user_ids, "run_id": run_id, "attachment": attachment},
        ).fetchall()


def own_tables(attachment: str | None) -> bool:
    """Whether attachment names the package's own tables."""
    return attachment in (None, OWN_TABLES)


def attachments(conn: psycopg.Connection, keeping_holds: bool = False) -> list[str]:
    """Every attachment's name, the package's own tables (economy) first; with
    keeping_holds, only those that keep holds (a held_column)."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT a.name FROM economy.attachments a"
            " WHERE NOT %s OR a.held_column IS NOT NULL"
            " ORDER BY a.name <> 'economy', a.name",
            [keeping_holds],
        )
    ]


def sync_role_name(conn: psycopg.Connection, attachment: str) -> str:
    """The role that attachment's code runs as, in this database
    (`economy.sync_role_name`): made by attach, or beforehand by an
    administrator's recipe (`economy-sync roles --sql --attachment NAME`)."""
    if conn.execute("SELECT to_regprocedure('economy.sync_role_name(text)')").fetchone()[0]:
        return conn.execute("SELECT economy.sync_role_name(%s)", [attachment]).fetchone()[0]
    # before the install (a Django migration that installs and attaches at
    # once): the same name, which tests/test_hosted_roles.py pins to the function's
    return conn.execute(
        "SELECT ('economy_sync_' || left(md5(d.oid::text || '/' || %s), 16))::name"
        " FROM pg_catalog.pg_database d WHERE d.datname = current_database()",
        [attachment],
    ).fetchone()[0]


def drift_summary(conn: psycopg.Connection) -> list[DriftCount]:
    """How many cached fields drifted, per attachment and field, over every
    attachment (`economy.drift_summary`); [] when all are in sync."""
    with conn.cursor(row_factory=class_row(DriftCount)) as cur:
        return cur.execute("SELECT * FROM economy.drift_summary()").fetchall()


def _of_wallet(rows: list, wallet_id: int, owner: int | None) -> list:
    """An ownerless wallet is named by a NULL owner, which names them all."""
    return rows if owner is not None else [row for row in rows if row.wallet_id == wallet_id]


def balance_drift(
    conn: psycopg.Connection,
    user_ids: Iterable[int | None] | None = None,
    attachment: str | None = None,
) -> list[DriftRow]:
    """Every cached field that disagrees with the ledger (`economy.balance_drift`),
    of everyone or of user_ids; [] when in sync."""
    with conn.cursor(row_factory=class_row(DriftRow)) as cur:
        return cur.execute(
            "SELECT * FROM economy.balance_drift(user_ids => %(user_ids)s::bigint[],"
            " attachment => %(attachment)s::text)",
            {"user_ids": None if user_ids is None else list(user_ids), "attachment": attachment},
        ).fetchall()


def stream_balance_drift(
    conn: psycopg.Connection,
    user_ids: Iterable[int | None] | None = None,
    attachment: str | None = None,
) -> Iterator[DriftRow]:
    """balance_drift's rows as the server sends them (a server-side cursor in a
    transaction of its own): for a check of everyone, however many drifted."""
    with (
        conn.transaction(),
        conn.cursor(name="economy_drift", row_factory=class_row(DriftRow)) as cur,
    ):
        cur.execute(
            "SELECT * FROM economy.balance_drift(user_ids => %(user_ids)s::bigint[],"
            " attachment => %(attachment)s::text)",
            {"user_ids": None if user_ids is None else list(user_ids), "attachment": attachment},
        )
        yield from cur


def get_balance_drift(
    conn: psycopg.Connection, wallet_id: int, attachment: str | None = None
) -> list[DriftRow]:
    """That wallet's drift rows (its owner's); [] when in sync."""
    owner = _wallet_owner(conn, wallet_id, attachment)
    return _of_wallet(balance_drift(conn, [owner], attachment), wallet_id, owner)


def recompute_lifetime_earnings(
    conn: psycopg.Connection, wallet_id: int, attachment: str | None = None
) -> Decimal:
    """The wallet's lifetime earnings according to the ledger."""
    with _known_wallet(wallet_id):
        return conn.execute(
            "SELECT t.lifetime_earnings FROM economy.wallet_ledger_totals("
            "%(wallet_id)s::bigint, attachment => %(attachment)s::text) t",
            {"wallet_id": wallet_id, "attachment": attachment},
        ).fetchone()[0]


def sync_profile_by_user_id(
    conn: psycopg.Connection, user_id: int, attachment: str | None = None
) -> list[ReconcileRow]:
    """Repair that user's wallet and profile caches from the ledger, as a real
    reconcile does (locked, logged), committed with it; returns the fields that changed."""
    with conn.transaction():
        return _reconcile_users(conn, [user_id], dry_run=False, attachment=attachment)


def sync_wallet_to_profile(
    conn: psycopg.Connection, wallet_id: int, attachment: str | None = None
) -> list[ReconcileRow]:
    """Repair that wallet's caches and its profile's from the ledger; returns what changed."""
    with conn.transaction():
        owner = _wallet_owner(conn, wallet_id, attachment)
        rows = _reconcile_users(conn, [owner], dry_run=False, attachment=attachment)
    return _of_wallet(rows, wallet_id, owner)


def _user_batches(
    conn: psycopg.Connection,
    user_ids: Iterable[int] | None,
    batch_size: int,
    attachment: str | None = None,
) -> Iterable[list[int | None]]:
    """Every user (owner) once, in key order, batch_size at a time (keyset
    paging: memory stays bounded however many there are); for an attachment,
    then [None]: its ownerless wallets."""
    if user_ids is not None:
        ordered = sorted(set(user_ids))
        for start in range(0, len(ordered), batch_size):
            yield ordered[start : start + batch_size]
        return
    after = None
    while True:
        batch = [
            row[0]
            for row in conn.execute(
                "SELECT * FROM economy.owner_keys(%(attachment)s::text,"
                " after => %(after)s::bigint, batch_size => %(batch_size)s::integer)",
                {"attachment": attachment, "after": after, "batch_size": batch_size},
            )
        ]
        if not batch:
            break
        yield batch
        after = batch[-1]
    if not own_tables(attachment):
        yield [None]


def advance_checkpoint(conn: psycopg.Connection, attachment: str | None = None) -> int | None:
    """Fold the committed ledger (the package's, or an attachment's) into its
    checkpoint, so that drift checks sum only newer entries; returns the
    ledger id now covered, or None when in-flight writes held the ledger
    longer than mark_ledger_horizon() waits (try later).
    `CALL economy.checkpoint_ledger(attachment => …)`: two short transactions,
    the first briefly blocks new writes; outside a transaction."""
    autocommit = conn.autocommit
    conn.autocommit = True  # the procedure commits between its steps
    try:
        return conn.execute(
            "CALL economy.checkpoint_ledger(attachment => %s)", [attachment]
        ).fetchone()[0]
    except errors.LockNotAvailable:
        return None
    finally:
        conn.autocommit = autocommit


def audit_ledger_checkpoint(
    conn: psycopg.Connection, attachment: str | None = None
) -> list[CheckpointMismatch]:
    """Check the checkpoint itself against a full sum of the ledger (reads it
    all: for an occasional audit); [] when it is right."""
    with conn.cursor(row_factory=class_row(CheckpointMismatch)) as cur:
        return cur.execute(
            "SELECT * FROM economy.audit_ledger_checkpoint(attachment => %s)", [attachment]
        ).fetchall()


def reset_ledger_checkpoint(conn: psycopg.Connection, attachment: str | None = None) -> None:
    """Empty the checkpoint after a failed audit; the next advance rebuilds it."""
    with conn.transaction():
        conn.execute("SELECT economy.reset_ledger_checkpoint(attachment => %s)", [attachment])


def checkpoint_lag(conn: psycopg.Connection, attachment: str | None = None) -> int:
    """How many ledger entries a drift check sums (`economy.checkpoint_lag`):
    those newer than the checkpoint, all of them without a trusted one."""
    return conn.execute("SELECT economy.checkpoint_lag(%s::text)", [attachment]).fetchone()[0]


def has_checkpoint(conn: psycopg.Connection, attachment: str | None = None) -> bool:
    """Whether the ledger can be checkpointed: the package's always, an
    attachment's when its ledger has an integer id with a sequence."""
    return conn.execute("SELECT economy.has_checkpoint(%s)", [attachment]).fetchone()[0]


def count_users(conn: psycopg.Connection, attachment: str | None = None) -> int:
    """How many batch entries a reconcile of everyone walks (an attachment's
    ownerless wallets count as one)."""
    owners = conn.execute(
        "SELECT count(*) FROM economy.owner_keys(%(attachment)s::text)", {"attachment": attachment}
    ).fetchone()[0]
    return owners + (not own_tables(attachment))


def reconcile(
    conn: psycopg.Connection,
    dry_run: bool = True,
    user_ids: Iterable[int] | None = None,
    batch_size: int = 1000,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
    lock_timeout: str = "5s",
    max_rows: int = 1000,
    attachment: str | None = None,
    into: ReconcileSummary | None = None,
) -> ReconcileSummary:
    """Reconcile the users (all, or user_ids) batch_size at a time, each batch
    its own transaction, so no lock is held long and an interrupted run can
    simply be run again. A real run over all users first advances the
    ledger checkpoint.
    limit caps the users examined. progress, if given, is called with the
    number of users each batch examined. attachment: an attached app's
    tables instead of the package's (its ownerless wallets come last). into:
    a summary to fill as batches commit (what a caller still has when the
    run is interrupted)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("reconcile runs its own transactions: call it outside one")
    summary = into or ReconcileSummary(dry_run=dry_run)
    # The checkpoint speeds up scans of everyone; a dry run writes nothing.
    if not dry_run and user_ids is None and has_checkpoint(conn, attachment):
        summary.checkpoint_skipped = advance_checkpoint(conn, attachment) is None
    for batch in _user_batches(conn, user_ids, batch_size, attachment):
        if limit is not None:
            batch = batch[: limit - summary.processed]
            if not batch:
                break
        try:
            with _transaction(conn, lock_timeout):
                rows = _reconcile_users(conn, batch, dry_run, summary.run_id, attachment)
        except RETRYABLE_ERRORS:
            summary.errors += 1
            rows = []
        summary.batches += 1
        summary.processed += len(batch)
        for row in rows:
            if row.field.endswith(EARNINGS_FIELD):
                summary.earnings_fixes += 1
            else:
                summary.balance_fixes += 1
            if len(summary.rows) < max_rows:
                summary.rows.append(row)
            else:
                summary.rows_omitted += 1
        if progress is not None:
            progress(len(batch))
    return summary


def balance_at(
    conn: psycopg.Connection, wallet_id: int, at: datetime, attachment: str | None = None
) -> Decimal:
    """The sum of the wallet's entries created at or before `at`."""
    value = conn.execute(
        "SELECT economy.balance_at(%(wallet_id)s::bigint, %(at)s::timestamptz,"
        " attachment => %(attachment)s::text)",
        {"wallet_id": wallet_id, "at": at, "attachment": attachment},
    ).fetchone()[0]
    if value is None:
        raise WalletNotFound(f"wallet {wallet_id} does not exist")
    return value


def _json(value: object) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def post_transaction(
    conn: psycopg.Connection,
    wallet_id: int,
    amount: Decimal,
    kind: str,
    idempotency_key: str | None = None,
    memo: str | None = None,
    metadata: object = None,
) -> LedgerEntry:
    """Append one entry (`economy.post_transaction`); a replayed key returns
    the entry it wrote."""
    with conn.cursor(row_factory=class_row(LedgerEntry)) as cur:
        return cur.execute(
            "SELECT * FROM economy.post_transaction(%(wallet_id)s::bigint, %(amount)s::numeric,"
            " %(kind)s::text, idempotency_key => %(idempotency_key)s::text,"
            " memo => %(memo)s::text, metadata => %(metadata)s::jsonb)",
            {
                "wallet_id": wallet_id,
                "amount": amount,
                "kind": kind,
                "idempotency_key": idempotency_key,
                "memo": memo,
                "metadata": _json(metadata),
            },
        ).fetchone()


def transfer(
    conn: psycopg.Connection,
    from_wallet_id: int,
    to_wallet_id: int,
    amount: Decimal,
    idempotency_key: str | None = None,
    memo: str | None = None,
    metadata: object = None,
) -> list[LedgerEntry]:
    """Move `amount` between two wallets (`economy.transfer`): the debit, then the credit."""
    with conn.cursor(row_factory=class_row(LedgerEntry)) as cur:
        return cur.execute(
            "SELECT * FROM economy.transfer(%(from)s::bigint, %(to)s::bigint, %(amount)s::numeric,"
            " idempotency_key => %(idempotency_key)s::text, memo => %(memo)s::text,"
            " metadata => %(metadata)s::jsonb)",
            {
                "from": from_wallet_id,
                "to": to_wallet_id,
                "amount": amount,
                "idempotency_key": idempotency_key,
                "memo": memo,
                "metadata": _json(metadata),
            },
        ).fetchall()


def transfer_many(
    conn: psycopg.Connection,
    transfers: Iterable[tuple[int, int, Decimal]],
    idempotency_key: str | None = None,
    memo: str | None = None,
    metadata: object = None,
) -> list[LedgerEntry]:
    """Several (from_wallet_id, to_wallet_id, amount) transfers in one statement,
    all or nothing (`economy.transfer_many`): each one's debit, then its credit."""
    rows = list(transfers)
    with conn.cursor(row_factory=class_row(LedgerEntry)) as cur:
        return cur.execute(
            "SELECT * FROM economy.transfer_many(%(payers)s::bigint[], %(payees)s::bigint[],"
            " %(amounts)s::numeric[], idempotency_key => %(idempotency_key)s::text,"
            " memo => %(memo)s::text, metadata => %(metadata)s::jsonb)",
            {
                "payers": [payer for payer, _, _ in rows],
                "payees": [payee for _, payee, _ in rows],
                "amounts": [amount for _, _, amount in rows],
                "idempotency_key": idempotency_key,
                "memo": memo,
                "metadata": _json(metadata),
            },
        ).fetchall()


def hold(
    conn: psycopg.Connection,
    wallet_id: int,
    amount: Decimal,
    expires_at: datetime | None = None,
    idempotency_key: str | None = None,
    memo: str | None = None,
    attachment: str | None = None,
) -> Hold:
    """Set `amount` of the wallet's available balance aside (`economy.hold`)."""
    with conn.cursor(row_factory=class_row(Hold)) as cur:
        return cur.execute(
            "SELECT * FROM economy.hold(%(wallet_id)s::bigint, %(amount)s::numeric,"
            " expires_at => %(expires_at)s::timestamptz,"
            " idempotency_key => %(idempotency_key)s::text, memo => %(memo)s::text,"
            " attachment => %(attachment)s::text)",
            {
                "wallet_id": wallet_id,
                "amount": amount,
                "expires_at": expires_at,
                "idempotency_key": idempotency_key,
                "memo": memo,
                "attachment": attachment,
            },
        ).fetchone()


def capture_hold(
    conn: psycopg.Connection,
    hold_id: int,
    amount: Decimal | None = None,
    kind: str = "purchase",
    memo: str | None = None,
    attachment: str | None = None,
) -> LedgerEntry:
    """Post the debit of a hold (all of it, or `amount`; the rest is released)."""
    with conn.cursor(row_factory=class_row(LedgerEntry)) as cur:
        return cur.execute(
            "SELECT * FROM economy.capture_hold(%(hold_id)s::bigint,"
            " amount => %(amount)s::numeric, kind => %(kind)s::text, memo => %(memo)s::text,"
            " attachment => %(attachment)s::text)",
            {
                "hold_id": hold_id,
                "amount": amount,
                "kind": kind,
                "memo": memo,
                "attachment": attachment,
            },
        ).fetchone()


def release_hold(conn: psycopg.Connection, hold_id: int, attachment: str | None = None) -> Hold:
    """Give a hold's amount back to the wallet's available balance."""
    with conn.cursor(row_factory=class_row(Hold)) as cur:
        return cur.execute(
            "SELECT * FROM economy.release_hold(%(hold_id)s::bigint,"
            " attachment => %(attachment)s::text)",
            {"hold_id": hold_id, "attachment": attachment},
        ).fetchone()


def expire_holds(conn: psycopg.Connection, attachment: str | None = None) -> int:
    """Mark every hold past its expiry expired; returns how many."""
    return conn.execute(
        "SELECT economy.expire_holds(attachment => %s::text)", [attachment]
    ).fetchone()[0]


def set_hot(
    conn: psycopg.Connection, wallet_id: int, hot: bool = True, attachment: str | None = None
) -> None:
    """Mark a wallet hot (credits stop queueing on its row) or back to normal
    (waits for the credits in flight, then folds them)."""
    try:
        conn.execute(
            "SELECT economy.set_hot(%(wallet_id)s::bigint, hot => %(hot)s::boolean,"
            " attachment => %(attachment)s::text)",
            {"wallet_id": wallet_id, "hot": hot, "attachment": attachment},
        )
    except errors.ForeignKeyViolation:
        raise WalletNotFound(f"wallet {wallet_id} does not exist") from None


def wallet_balance(
    conn: psycopg.Connection, wallet_id: int, attachment: str | None = None
) -> Decimal:
    """The wallet's exact balance, hot or not (its cache plus parked credits)."""
    value = conn.execute(
        "SELECT economy.wallet_balance(%(wallet_id)s::bigint, attachment => %(attachment)s::text)",
        {"wallet_id": wallet_id, "attachment": attachment},
    ).fetchone()[0]
    if value is None:
        raise WalletNotFound(f"wallet {wallet_id} does not exist")
    return value


def fold_hot_wallets(conn: psycopg.Connection, attachment: str | None = None) -> int:
    """Fold every hot wallet's parked credits into its caches; returns how many wallets."""
    return conn.execute(
        "SELECT economy.fold_hot_wallets(attachment => %(attachment)s::text)",
        {"attachment": attachment},
    ).fetchone()[0]


def post_batch(conn: psycopg.Connection, rows: Iterable[tuple]) -> None:
    """COPY rows (wallet_id, amount, kind[, idempotency_key[, memo]]) into
    economy.transaction_batch: one statement, applied set-based; all or nothing."""
    with (
        conn.transaction(),
        conn.cursor() as cur,
        cur.copy(
            "COPY economy.transaction_batch (wallet_id, amount, kind, idempotency_key, memo)"
            " FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(tuple(row) + (None,) * (5 - len(row)))


def prune_transfer_keys(conn: psycopg.Connection, older_than: timedelta) -> int:
    """Delete the keys of transfer_many calls made more than older_than ago (a
    call retried with a pruned key transfers again); returns how many."""
    return conn.execute(
        "SELECT economy.prune_transfer_keys(%(older_than)s::interval)", {"older_than": older_than}
    ).fetchone()[0]


def prune_reconcile_log(conn: psycopg.Connection, older_than: timedelta) -> int:
    """Delete the reconcile_log rows logged more than older_than ago; returns how many."""
    return conn.execute(
        "SELECT economy.prune_reconcile_log(%(older_than)s::interval)", {"older_than": older_than}
    ).fetchone()[0]
