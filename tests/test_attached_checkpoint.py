"""The ledger checkpoint of an attachment (CALL economy.checkpoint_ledger(attachment
=> …)): a drift check then sums only the entries newer than it, and stays exact
while the app updates, deletes or inserts old entries (ids of its choosing
included) with the sync on; a change made with the sync switched off voids it."""

import threading

import psycopg
import pytest
from helpers import SEED_ATTACH, SEED_TABLES, attached_drift, pay, rows_read
from psycopg import errors

from economy_sync import advance_checkpoint, audit_ledger_checkpoint, reconcile
from economy_sync.doctor import findings
from economy_sync.metrics import collect


def entries_read(conn):
    """Ledger rows a drift check reads (through the id index, as it would on a
    ledger larger than these few rows)."""
    conn.execute("SET enable_seqscan = off")
    try:
        return rows_read(conn, "app_transaction", lambda: attached_drift(conn, "seed"))
    finally:
        conn.execute("RESET enable_seqscan")


def checkpoint(conn):
    return conn.execute(
        "SELECT wallet_id, balance, earnings FROM economy.attached_ledger_checkpoint"
        " WHERE attachment = 'seed' ORDER BY wallet_id"
    ).fetchall()


def full_sums(conn, up_to=None):
    """Per wallet: the sum of the entries (up to an id) and of the earning ones."""
    return conn.execute(
        "SELECT wallet_id, sum(amount), sum(amount) FILTER (WHERE amount > 0)"
        " FROM app_transaction WHERE id <= coalesce(%s, id) GROUP BY wallet_id"
        " ORDER BY wallet_id",
        [up_to],
    ).fetchall()


def exact(conn):
    """No drift, the checkpoint equal to a full sum of what it covers."""
    covered = conn.execute(
        "SELECT checkpointed_up_to FROM economy.attached_ledger_horizon WHERE attachment = 'seed'"
    ).fetchone()[0]
    assert attached_drift(conn, "seed") == []
    assert audit_ledger_checkpoint(conn, "seed") == []
    if covered is not None:
        assert [(w, b, e or 0) for w, b, e in full_sums(conn, covered)] == [
            (w, b, e) for w, b, e in checkpoint(conn) if (b, e) != (0, 0)
        ]


def test_the_checkpoint_sums_the_ledger_and_a_drift_check_reads_only_newer_entries(seeded):
    assert checkpoint(seeded) == [(w, b, e) for w, b, e in full_sums(seeded)]
    pay(seeded, 1, 7)
    pay(seeded, 2, -2)
    assert entries_read(seeded) == 2
    exact(seeded)
    # without it, the same check reads all 32
    seeded.execute("SELECT economy.reset_ledger_checkpoint(attachment => 'seed')")
    assert entries_read(seeded) == 32
    assert advance_checkpoint(seeded, "seed") == 32
    exact(seeded)


@pytest.mark.parametrize(
    "write",
    [
        "UPDATE app_transaction SET amount = amount + 10 WHERE id = 3",
        "UPDATE app_transaction SET amount = -amount WHERE id IN (4, 5, 6)",
        "UPDATE app_transaction SET wallet_id = 3 WHERE id = 7",
        "UPDATE app_transaction SET id = 1000 WHERE id = 8",  # out of the checkpoint
        "UPDATE app_transaction SET id = -8 WHERE id = 9",  # below every id
        "DELETE FROM app_transaction WHERE id IN (1, 2, 31)",
        "INSERT INTO app_transaction (id, wallet_id, amount, reason) VALUES (-1, 2, 4, 'prize')",
        "INSERT INTO app_transaction (id, wallet_id, amount, reason)"
        " VALUES (-2, 2, 4, 'prize'), (-3, 3, -1, 'fee'), (1000, 1, 9, 'prize')",
        "INSERT INTO app_transaction (id, wallet_id, amount, reason)"
        " SELECT -g, 1 + g % 3, 1, 'prize' FROM generate_series(10, 60) g",
    ],
)
def test_app_writes_to_old_entries_keep_it_exact(seeded, login, write):
    pay(seeded, 1, 3)  # id 31: newer than the checkpoint
    login("economy_app")  # (a plain app login writes the app's tables: the owner here)
    seeded.execute(write)
    exact(seeded)
    assert advance_checkpoint(seeded, "seed") is not None
    exact(seeded)


def test_a_change_made_with_the_sync_switched_off_is_reported(seeded):
    with seeded.transaction():
        seeded.execute("ALTER TABLE app_transaction DISABLE TRIGGER USER")
        seeded.execute("UPDATE app_transaction SET amount = amount + 100 WHERE id = 2")
        seeded.execute("ALTER TABLE app_transaction ENABLE TRIGGER USER")
    drifted = {(row[1], row[2]) for row in attached_drift(seeded, "seed")}
    assert (3, "wallet.balance") in drifted  # entry 2 is wallet 3's
    # the next advance sums the ledger again, from the start: the drift stays
    advance_checkpoint(seeded, "seed")
    assert (3, "wallet.balance") in {(row[1], row[2]) for row in attached_drift(seeded, "seed")}
    assert audit_ledger_checkpoint(seeded, "seed") == []
    reconcile(seeded, dry_run=False, attachment="seed")
    exact(seeded)


def test_one_call_advances_every_ledger_that_has_one(seeded, login):
    seeded.execute(
        "CREATE TABLE no_sequence (id bigint PRIMARY KEY, wallet_id integer, amount integer)"
    )
    seeded.execute("CREATE TABLE no_sequence_wallet (id integer PRIMARY KEY, balance integer)")
    seeded.execute("SELECT economy.attach('plain', 'no_sequence', 'no_sequence_wallet')")
    pay(seeded, 1, 5)
    seeded.execute("SELECT economy.post_transaction(economy.open_wallet(1), 3, 'prize')")
    login("economy_operator").execute("CALL economy.checkpoint_ledgers()")
    assert seeded.execute("SELECT checkpointed_up_to FROM economy.ledger_horizon").fetchone() == (
        1,
    )
    assert seeded.execute(
        "SELECT attachment, checkpointed_up_to FROM economy.attached_ledger_horizon ORDER BY 1"
    ).fetchall() == [("plain", None), ("seed", 31)]


def test_doctor_says_when_the_checkpoint_is_void(seeded):
    def void():
        return any("checkpoint is void" in f.message for f in findings(seeded, "seed"))

    assert not void()
    seeded.execute("ALTER TABLE app_transaction DISABLE TRIGGER USER")
    seeded.execute("ALTER TABLE app_transaction ENABLE TRIGGER USER")
    assert void()
    advance_checkpoint(seeded, "seed")
    assert not void()


def test_replacing_the_sync_voids_the_checkpoint_until_the_next_advance(seeded):
    seeded.execute("SELECT economy.reattach('seed')")
    assert entries_read(seeded) == 30
    advance_checkpoint(seeded, "seed")
    assert entries_read(seeded) == 0
    exact(seeded)


def test_truncating_the_ledger_with_its_wallets_empties_it(seeded):
    seeded.execute("TRUNCATE app_transaction, app_wallet RESTART IDENTITY")
    assert checkpoint(seeded) == []
    seeded.execute("INSERT INTO app_wallet (profile_id) VALUES (1), (2)")
    pay(seeded, 1, 5)  # id 1 again, under the old horizon
    pay(seeded, 2, 6)
    seeded.execute("DELETE FROM app_transaction WHERE id = 2")
    exact(seeded)


def test_a_ledger_without_an_id_sequence_has_no_checkpoint_and_says_so(conn):
    conn.execute(SEED_TABLES)
    conn.execute("ALTER TABLE app_transaction ALTER COLUMN id DROP DEFAULT")
    conn.execute("ALTER SEQUENCE app_transaction_id_seq OWNED BY NONE")
    conn.execute(SEED_ATTACH)
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="no integer id column"):
        advance_checkpoint(conn, "seed")
    conn.execute("INSERT INTO app_profile DEFAULT VALUES")
    conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")
    conn.execute(
        "INSERT INTO app_transaction (id, wallet_id, amount, reason) VALUES (1, 1, 5, 'x')"
    )
    assert attached_drift(conn, "seed") == []
    assert reconcile(conn, dry_run=False, attachment="seed").checkpoint_skipped is False


def test_an_advance_waits_for_an_old_entry_written_in_flight(seeded, connect):
    """A write to an entry the checkpoint covers, or will cover, holds its
    horizon row until commit: the advance waits, then sums it as committed."""
    pay(seeded, 2, 4)  # id 31
    seeded.execute("SELECT economy.mark_ledger_horizon(attachment => 'seed')")
    writer = connect(autocommit=False)
    writer.execute("UPDATE app_transaction SET amount = amount + 1 WHERE id = 5")  # covered
    writer.execute("UPDATE app_transaction SET amount = amount + 1 WHERE id = 31")  # to be covered
    advancing = connect()
    advancing.execute("SET lock_timeout = '200ms'")
    with pytest.raises(errors.LockNotAvailable):
        advancing.execute("SELECT economy.advance_ledger_checkpoint(attachment => 'seed')")
    writer.commit()
    assert advancing.execute(
        "SELECT economy.advance_ledger_checkpoint(attachment => 'seed')"
    ).fetchone() == (31,)
    exact(seeded)


def test_concurrent_app_writes_and_checkpoints_stay_exact(seeded, connect):
    """Writers insert, update and delete entries old and new (a statement a
    transaction: two app transactions that lock wallets in opposite orders
    deadlock on their own), while the checkpoint advances again and again: no
    deadlock, and the figures and the checkpoint are exact at the end."""
    errors_seen: list[BaseException] = []
    stop = threading.Event()
    writers = [connect() for _ in range(3)]
    checkpointer = connect()

    def write(conn: psycopg.Connection, n: int):
        try:
            for i in range(40):
                wallet = 1 + (i + n) % 3
                conn.execute(
                    "INSERT INTO app_transaction (wallet_id, amount, reason) VALUES (%s, 2, 'x')",
                    [wallet],
                )
                conn.execute(
                    "UPDATE app_transaction SET amount = amount + 1 WHERE id = %s", [1 + i % 30]
                )
                if i % 5 == n:
                    conn.execute("DELETE FROM app_transaction WHERE id = %s", [30 - i % 30])
        except BaseException as error:  # reported below
            errors_seen.append(error)

    def advance():
        try:
            while not stop.is_set():
                advance_checkpoint(checkpointer, "seed")
        except BaseException as error:
            errors_seen.append(error)

    threads = [threading.Thread(target=write, args=(w, n)) for n, w in enumerate(writers)]
    threads.append(threading.Thread(target=advance))
    for thread in threads:
        thread.start()
    for thread in threads[:-1]:
        thread.join()
    stop.set()
    threads[-1].join()
    assert errors_seen == []
    exact(seeded)
    advance_checkpoint(seeded, "seed")
    exact(seeded)


def test_no_other_role_writes_an_attachments_checkpoint(seeded, login, conn):
    """App logins read it; a sync role (what code of the tables' owner runs
    as) keeps its own attachment's rows and may not move its horizon; nobody
    writes another attachment's."""
    app = login("economy_app")
    assert app.execute(
        "SELECT count(*) FROM economy.attached_ledger_checkpoint WHERE attachment = 'seed'"
    ).fetchone() == (3,)
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute("UPDATE economy.attached_ledger_checkpoint SET balance = 0")
    conn.execute(SEED_TABLES.replace("app_", "other_"))
    conn.execute(SEED_ATTACH.replace("app_", "other_").replace("'seed'", "'other'"))
    sync_role = conn.execute(
        "SELECT sync_role FROM economy.attachments WHERE name = 'other'"
    ).fetchone()[0]
    with conn.transaction():
        conn.execute(f'SET LOCAL ROLE "{sync_role}"')
        assert (
            conn.execute("UPDATE economy.attached_ledger_checkpoint SET balance = 0").rowcount == 0
        )  # seed's rows: not even seen
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE economy.attached_ledger_horizon SET checkpointed_up_to = 0")
    with pytest.raises(errors.InsufficientPrivilege), conn.transaction():  # row level security
        conn.execute(f'SET LOCAL ROLE "{sync_role}"')
        conn.execute(
            "INSERT INTO economy.attached_ledger_checkpoint (attachment, wallet_id, balance,"
            " earnings) VALUES ('seed', 1, 1000, 0)"
        )
    exact(seeded)


def test_metrics_count_what_a_drift_check_sums(seeded, login):
    """economy_checkpoint_lag_entries of an attachment, read as a metrics login
    (economy_app) that may not read the app's ledger: the entries newer than
    the checkpoint, every entry once the checkpoint is void."""
    reader = login("economy_app")

    def lag():
        samples = collect(reader).decode().splitlines()
        return [
            s for s in samples if s.startswith('economy_checkpoint_lag_entries{attachment="seed"}')
        ]

    assert lag() == ['economy_checkpoint_lag_entries{attachment="seed"} 0.0']
    pay(seeded, 1, 5)
    pay(seeded, 2, 5)
    assert lag() == ['economy_checkpoint_lag_entries{attachment="seed"} 2.0']
    seeded.execute("ALTER TABLE app_transaction DISABLE TRIGGER USER")
    seeded.execute("ALTER TABLE app_transaction ENABLE TRIGGER USER")
    assert lag() == ['economy_checkpoint_lag_entries{attachment="seed"} 32.0']
    with pytest.raises(errors.InsufficientPrivilege):
        reader.execute("SELECT count(*) FROM app_transaction")
