"""Holds on attached tables: an app's wallet column (here `pending_balance`)
caches the sum of its holds, as economy.wallet.held does for the package's
wallets: hold, capture, release and expire with `attachment =>`, checked
against the overdraft limit with the available amount (balance - held), exact
in the app's integer types, covered by drift and reconcile, guarded, and
refused to logins that may not write the app's ledger."""

import threading
import time
from decimal import Decimal

import psycopg
import pytest
from helpers import (
    SEED_ATTACH,
    SEED_ATTACH_WITH_HOLDS,
    SEED_HELD_COLUMN,
    SEED_TABLES,
    pay,
    seed_with_holds,
)
from helpers import attached_drift as drift
from psycopg import errors
from psycopg.conninfo import make_conninfo

from economy_sync import (
    capture_hold,
    doctor,
    expire_holds,
    hold,
    migrate,
    reconcile,
    release_hold,
    set_hot,
    wallet_balance,
)
from economy_sync.cli import main as cli

ANA, BO, TREASURY = 1, 2, 3


@pytest.fixture
def seed(conn):
    """The Django-shaped app (tests/helpers.py) with a `pending_balance` on its
    wallets: 100 on wallets 1 and 2 (no overdraft), the treasury 3 unlimited."""
    return seed_with_holds(conn)


def figures(conn, wallet):
    return conn.execute(
        "SELECT cached_balance, pending_balance FROM app_wallet WHERE id = %s", [wallet]
    ).fetchone()


def held_rows(conn):
    return conn.execute("SELECT count(*) FROM economy.attached_hold").fetchone()[0]


def test_a_hold_sets_money_aside_and_a_capture_spends_it(seed):
    placed = hold(seed, ANA, Decimal(30), memo="basket 7", attachment="seed")
    assert (placed.wallet_id, placed.amount, placed.status) == (ANA, 30, "held")
    assert figures(seed, ANA) == (100, 30)
    # available is 70: a debit of 71 is refused, whole statement
    with pytest.raises(errors.CheckViolation, match="overdraft limit"):
        pay(seed, ANA, -71)
    with pytest.raises(errors.CheckViolation, match="overdraft limit"):
        seed.execute(
            "INSERT INTO app_transaction (wallet_id, amount, reason)"
            " VALUES (1, -40, 'a'), (2, -1, 'b'), (1, -31, 'c')"
        )
    assert figures(seed, ANA) == (100, 30)

    entry = capture_hold(seed, placed.id, Decimal(20), attachment="seed")
    assert (entry.wallet_id, entry.amount, entry.kind) == (ANA, -20, "purchase")
    row = seed.execute(
        "SELECT wallet_id, amount, reason FROM app_transaction WHERE id = %s", [entry.id]
    ).fetchone()
    assert row == (ANA, -20, "purchase")
    assert figures(seed, ANA) == (80, 0)  # the rest of the hold released
    captured = seed.execute(
        "SELECT status, captured_entry_id FROM economy.attached_hold WHERE id = %s", [placed.id]
    ).fetchone()
    assert captured == ("captured", entry.id)
    assert drift(seed, "seed") == []


def test_lowering_an_entry_counts_what_the_wallet_holds(seed):
    hold(seed, ANA, Decimal(30), attachment="seed")
    seed.execute("UPDATE app_transaction SET amount = 60 WHERE wallet_id = 1")
    assert figures(seed, ANA) == (60, 30)
    with pytest.raises(errors.CheckViolation, match="overdraft limit"):
        seed.execute("UPDATE app_transaction SET amount = 20 WHERE wallet_id = 1")
    with pytest.raises(errors.CheckViolation, match="overdraft limit"):
        seed.execute("DELETE FROM app_transaction WHERE wallet_id = 1")
    assert figures(seed, ANA) == (60, 30)


def test_a_capture_spends_the_held_amount_at_the_limit(seed):
    placed = hold(seed, ANA, Decimal(100), attachment="seed")
    with pytest.raises(errors.CheckViolation):
        hold(seed, ANA, Decimal(1), attachment="seed")
    capture_hold(seed, placed.id, attachment="seed")
    assert figures(seed, ANA) == (0, 0)
    assert drift(seed, "seed") == []


def test_release_and_expiry(seed):
    kept = hold(seed, ANA, Decimal(10), attachment="seed")
    released = release_hold(seed, kept.id, attachment="seed")
    assert released.status == "released"
    assert figures(seed, ANA) == (100, 0)
    for again in (
        lambda: release_hold(seed, kept.id, attachment="seed"),
        lambda: capture_hold(seed, kept.id, attachment="seed"),
    ):
        with pytest.raises(errors.CheckViolation, match="is released"):
            again()
    with pytest.raises(errors.NoDataFound):
        release_hold(seed, 999, attachment="seed")

    past = hold(seed, BO, Decimal(5), expires_at="2000-01-01T00:00Z", attachment="seed")
    hold(seed, BO, Decimal(6), expires_at="2999-01-01T00:00Z", attachment="seed")
    with pytest.raises(errors.CheckViolation, match="expired"):
        capture_hold(seed, past.id, attachment="seed")
    assert figures(seed, BO) == (100, 11)  # counts until expire_holds marks it
    said = [f.message for f in doctor.findings(seed, "seed") if not f.ok]
    assert said == ["seed: 1 holds are past their expiry and still count against their"
                    " wallets: `economy-sync holds expire` (schedule it)"]  # fmt: skip
    assert expire_holds(seed, "seed") == 1
    assert figures(seed, BO) == (100, 6)
    assert expire_holds(seed, "seed") == 0
    assert drift(seed, "seed") == []


def test_a_capture_in_a_transaction_begun_before_the_expiry_is_refused(seed):
    placed = seed.execute(
        "SELECT id FROM economy.hold(1, 10, expires_at => clock_timestamp() + interval '0.5 s',"
        " attachment => 'seed')"
    ).fetchone()[0]
    with seed.transaction():
        seed.execute("SELECT now()")  # the transaction's time is fixed here
        time.sleep(0.6)
        with pytest.raises(errors.CheckViolation, match="expired"), seed.transaction():
            capture_hold(seed, placed, attachment="seed")
    assert figures(seed, ANA) == (100, 10)


def test_idempotency_keys(seed):
    first = hold(seed, ANA, Decimal(10), idempotency_key="cart-1", attachment="seed")
    again = hold(seed, ANA, Decimal(10), idempotency_key="cart-1", attachment="seed")
    assert again.id == first.id
    with pytest.raises(errors.UniqueViolation):
        hold(seed, ANA, Decimal(11), idempotency_key="cart-1", attachment="seed")
    assert figures(seed, ANA) == (100, 10)


@pytest.mark.parametrize(
    "amount", ["1.5", "0", "-1", "NaN", "Infinity", "-Infinity", "0.001", "3000000000"]
)
def test_an_amount_the_integer_columns_cannot_hold_exactly_is_refused(seed, amount):
    with pytest.raises((errors.CheckViolation, errors.NumericValueOutOfRange)):
        hold(seed, TREASURY, Decimal(amount), attachment="seed")
    assert held_rows(seed) == 0
    assert figures(seed, TREASURY) == (0, 0)


def test_a_held_sum_that_would_overflow_its_column_is_refused_and_the_wallet_works(seed):
    # the treasury has no limit: holds may exceed its balance
    hold(seed, TREASURY, Decimal(2_000_000_000), attachment="seed")
    with pytest.raises(errors.NumericValueOutOfRange):
        hold(seed, TREASURY, Decimal(2_000_000_000), attachment="seed")
    assert held_rows(seed) == 1
    assert figures(seed, TREASURY) == (0, 2_000_000_000)
    pay(seed, TREASURY, -5)
    assert figures(seed, TREASURY) == (-5, 2_000_000_000)
    assert drift(seed, "seed") == []


def test_a_hold_on_a_hot_wallet_counts_its_parked_credits(seed):
    set_hot(seed, ANA, attachment="seed")
    pay(seed, ANA, 50)  # parked
    assert figures(seed, ANA) == (100, 0)
    hold(seed, ANA, Decimal(150), attachment="seed")
    assert figures(seed, ANA) == (150, 150)  # folded first
    assert wallet_balance(seed, ANA, attachment="seed") == 150
    assert drift(seed, "seed") == []


def test_drift_and_reconcile_cover_the_held_column(seed):
    hold(seed, ANA, Decimal(30), attachment="seed")
    seed.execute("ALTER TABLE app_wallet DISABLE TRIGGER USER")
    seed.execute("UPDATE app_wallet SET pending_balance = 7 WHERE id = 1")
    seed.execute("ALTER TABLE app_wallet ENABLE TRIGGER USER")
    assert drift(seed, "seed") == [(1, 1, "wallet.held", 7, 30)]
    summary = seed.execute("SELECT * FROM economy.drift_summary()").fetchall()
    assert ("seed", "wallet.held", 1) in summary
    result = reconcile(seed, dry_run=False, attachment="seed")
    assert [(r.field, r.fixed) for r in result.rows] == [("wallet.held", True)]
    assert figures(seed, ANA) == (100, 30)
    assert drift(seed, "seed") == []


def test_the_held_column_is_guarded(seed, login):
    hold(seed, ANA, Decimal(30), attachment="seed")
    seed.execute("UPDATE app_wallet SET pending_balance = 0, cached_balance = 5 WHERE id = 1")
    assert figures(seed, ANA) == (100, 30)  # a stale full-row save keeps them
    seed.execute("INSERT INTO app_wallet (profile_id, pending_balance) VALUES (2, 99)")
    new = seed.execute("SELECT max(id) FROM app_wallet").fetchone()[0]
    assert figures(seed, new) == (0, 0)
    app = login("economy_app")
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute(
            "INSERT INTO economy.attached_hold (attachment, wallet_id, amount)"
            " VALUES ('seed', 1, 1)"
        )


def test_holds_are_for_logins_that_may_write_the_ledger(seed, login):
    app = login("economy_app")
    seed.execute(
        "GRANT SELECT ON app_wallet, app_profile, app_transaction TO economy_test_app_login"
    )
    with pytest.raises(errors.InsufficientPrivilege, match="may insert into"):
        hold(app, ANA, Decimal(1), attachment="seed")
    placed = hold(seed, ANA, Decimal(5), attachment="seed")
    for refused in (
        lambda: capture_hold(app, placed.id, attachment="seed"),
        lambda: release_hold(app, placed.id, attachment="seed"),
    ):
        with pytest.raises(errors.InsufficientPrivilege):
            refused()
    # (the generated functions are the package's to call)
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute("SELECT economy.attached_seed_release(%s)", [placed.id])
    seed.execute("GRANT INSERT ON app_transaction TO economy_test_app_login")
    capture_hold(app, placed.id, attachment="seed")
    assert figures(seed, ANA) == (95, 0)
    # every login of the package reads them, as the parked credits
    assert app.execute("SELECT count(*) FROM economy.attached_hold").fetchone()[0] == 1


def test_an_attachment_without_a_held_column_keeps_no_holds(conn):
    conn.execute(SEED_TABLES)
    conn.execute(
        "SELECT economy.attach('plain', 'app_transaction', 'app_wallet',"
        " wallet_balance_column => 'cached_balance')"
    )
    conn.execute("INSERT INTO app_wallet DEFAULT VALUES")
    with pytest.raises(errors.FeatureNotSupported, match="held_column"):
        hold(conn, 1, Decimal(1), attachment="plain")
    conn.execute("SELECT economy.detach('plain')")
    with pytest.raises(errors.InvalidParameterValue, match="mapped already"):
        conn.execute(
            "SELECT economy.attach('plain', 'app_transaction', 'app_wallet',"
            " wallet_balance_column => 'cached_balance', held_column => 'cached_balance')"
        )


def test_reattach_starts_holds_on_an_attachment_made_without_them(conn):
    conn.execute(SEED_TABLES)
    conn.execute(SEED_ATTACH)
    conn.execute("INSERT INTO app_wallet DEFAULT VALUES")
    pay(conn, 1, 10)
    conn.execute(SEED_HELD_COLUMN)
    conn.execute(
        "SELECT economy.reattach('seed', held_column => 'pending_balance', kind_column => 'reason')"
    )
    placed = hold(conn, 1, Decimal(4), attachment="seed")
    assert figures(conn, 1) == (10, 4)
    capture_hold(conn, placed.id, attachment="seed")
    assert figures(conn, 1) == (6, 0)
    conn.execute("SELECT economy.reattach('seed')")  # keeps them
    hold(conn, 1, Decimal(1), attachment="seed")
    assert figures(conn, 1) == (6, 1)
    assert drift(conn, "seed") == []


def test_truncate_with_the_wallets_and_detach_take_the_holds(seed):
    hold(seed, ANA, Decimal(5), attachment="seed")
    seed.execute("TRUNCATE app_transaction, app_wallet, app_profile")
    assert held_rows(seed) == 0
    seed.execute("INSERT INTO app_profile (id) VALUES (1)")
    seed.execute("INSERT INTO app_wallet (id, profile_id) VALUES (1, 1)")
    pay(seed, ANA, 10)
    hold(seed, ANA, Decimal(5), attachment="seed")
    seed.execute("SELECT economy.detach('seed')")
    assert held_rows(seed) == 0


def test_the_cli_expires_the_holds_of_every_attachment(seed, dsn, capsys):
    hold(seed, ANA, Decimal(5), expires_at="2000-01-01T00:00Z", attachment="seed")
    seed.execute("SELECT economy.open_wallet(1)")
    seed.execute("SELECT economy.post_transaction(1, 10, 'reward')")
    seed.execute("SELECT economy.hold(1, 5, expires_at => '2000-01-01')")
    assert cli(["holds", "expire", "--dsn", dsn]) == 0
    out = capsys.readouterr().out
    assert "Expired holds: 2" in out and "seed: 1" in out
    assert figures(seed, ANA) == (100, 0)


def test_racing_holds_debits_and_captures_keep_the_available_amount(seed, dsn):
    """Eight connections hold, capture, release and pay on one wallet: it never
    goes below its limit with what it holds, and its figures stay exact."""
    pay(seed, ANA, 900)  # 1000 on wallet 1
    failures = []

    def worker(n):
        with psycopg.connect(make_conninfo(dsn), autocommit=True) as c:
            for i in range(25):
                try:
                    placed = hold(c, ANA, Decimal(7 + n), attachment="seed")
                    if i % 3 == 0:
                        release_hold(c, placed.id, attachment="seed")
                    elif i % 3 == 1:
                        capture_hold(c, placed.id, Decimal(3), attachment="seed")
                    pay(c, ANA, -2 if i % 2 else 3)
                except errors.CheckViolation:
                    pass  # the limit, reached
                except Exception as error:
                    failures.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert drift(seed, "seed") == []
    balance, pending = figures(seed, ANA)
    assert balance - pending >= 0
    held = seed.execute(
        "SELECT coalesce(sum(amount), 0) FROM economy.attached_hold WHERE status = 'held'"
    ).fetchone()[0]
    assert held == pending


def test_attachments_made_before_0015_keep_working_and_get_holds_up_and_down(empty_dsn):
    """Upgrading regenerates an existing attachment (no holds until it is
    attached with a held_column); downgrading drops the holds and their code,
    and the attachment keeps syncing."""
    migrate.upgrade(empty_dsn, "0014_attached_checkpoint")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(SEED_TABLES)
        conn.execute(SEED_HELD_COLUMN)
        conn.execute(SEED_ATTACH)
        conn.execute("INSERT INTO app_profile (username) VALUES ('ana')")
        conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")
        pay(conn, ANA, 50)
        migrate.upgrade(empty_dsn)
        assert drift(conn, "seed") == []
        with pytest.raises(errors.FeatureNotSupported):
            hold(conn, ANA, Decimal(1), attachment="seed")
        conn.execute("SELECT economy.detach('seed')")
        conn.execute(SEED_ATTACH_WITH_HOLDS)
        hold(conn, ANA, Decimal(10), attachment="seed")
        sync_role = conn.execute(
            "SELECT sync_role FROM economy.attachments WHERE name = 'seed'"
        ).fetchone()[0]

        def may_insert():
            return conn.execute(
                "SELECT has_any_column_privilege(%s, 'app_transaction', 'INSERT')", [sync_role]
            ).fetchone()[0]

        assert may_insert()
        migrate.downgrade(empty_dsn, "0014_attached_checkpoint")
        assert not may_insert()
        assert conn.execute("SELECT to_regclass('economy.attached_hold')").fetchone()[0] is None
        pay(conn, ANA, -5)
        assert figures(conn, ANA) == (45, 10)  # the held column is the app's again
        assert drift(conn, "seed") == []
        migrate.upgrade(empty_dsn)
        pay(conn, ANA, 5)
        assert drift(conn, "seed") == []
