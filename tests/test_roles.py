"""The group roles: what the application and the operator may and may not do."""

from decimal import Decimal

import psycopg
import pytest
from helpers import balances, drift, open_wallet, post
from psycopg import errors
from psycopg.conninfo import make_conninfo


@pytest.fixture
def as_role(login):
    """as_role(role): a connection of a login that is a member of role."""
    return login


@pytest.fixture
def app(as_role):
    return as_role("economy_app")


@pytest.fixture
def operator(as_role):
    return as_role("economy_operator")


@pytest.mark.parametrize("role", ["economy_app", "economy_operator"])
def test_role_can_use_the_ledger_api(as_role, role):
    c = as_role(role)
    a, b = open_wallet(c, 1), open_wallet(c, 2)
    post(c, a, "50", kind="prize")
    entry = post(c, a, "5", kind="refund")
    c.execute("SELECT economy.transfer(%s, %s, 10)", [a, b])
    c.execute("SELECT economy.reverse_transaction(%s)", [entry["id"]])
    c.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind) VALUES (%s, 3, 'reward')", [b]
    )
    assert balances(c, b) == (Decimal("13.00"), Decimal("13.00"), Decimal("3.00"))
    assert drift(c) == []


@pytest.mark.parametrize("role", ["economy_app", "economy_operator"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE economy.wallet SET balance = 1000000",
        "UPDATE economy.profile SET balance = 1000000",
        "UPDATE economy.profile SET lifetime_earnings = 0",
        "UPDATE economy.transaction SET amount = 1",
        "DELETE FROM economy.transaction",
        "TRUNCATE economy.transaction",
        "DELETE FROM economy.reconcile_log",
        "INSERT INTO economy.reconcile_log (run_id, user_id, field, cached_value, ledger_value)"
        " VALUES (gen_random_uuid(), 1, 'x', 0, 0)",
        "INSERT INTO economy.transaction_kind VALUES ('bonus', true)",
        "ALTER TABLE economy.transaction DISABLE TRIGGER USER",
        "SET session_replication_role = replica",
    ],
)
def test_role_cannot_bypass_the_ledger(as_role, conn, role, statement):
    post(conn, open_wallet(conn, 1), "10")
    c = as_role(role)
    with pytest.raises((errors.InsufficientPrivilege, errors.RestrictViolation)):
        c.execute(statement)
    assert balances(conn, 1) == (Decimal("10.00"), Decimal("10.00"), Decimal("10.00"))


@pytest.mark.parametrize(
    "call",
    [
        "SELECT * FROM economy.reconcile_economy(dry_run => false)",
        "SELECT economy.mark_ledger_horizon()",
        "SELECT economy.advance_ledger_checkpoint()",
        "CALL economy.checkpoint_ledger()",
        "SELECT economy.prune_reconcile_log('1 day')",
        "SELECT economy.set_hot(1)",
        "SELECT economy.fold_hot_wallets()",
    ],
)
def test_app_cannot_reconcile_or_checkpoint(app, call):
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute(call)


def test_operator_can_advance_the_checkpoint(operator, conn):
    post(conn, open_wallet(conn, 1), "10")
    assert operator.execute("CALL economy.checkpoint_ledger()").fetchone() == (1,)
    assert conn.execute("SELECT checkpointed_up_to FROM economy.ledger_horizon").fetchone() == (1,)
    assert conn.execute("SELECT balance FROM economy.ledger_checkpoint").fetchone() == (10,)


def test_operator_can_reconcile(operator, conn):
    wallet_id = open_wallet(conn, 1)
    post(conn, wallet_id, "10")
    conn.execute("UPDATE economy.wallet SET balance = 0")
    fixed = operator.execute("SELECT * FROM economy.reconcile_economy(dry_run => false)").fetchall()
    assert [row[2] for row in fixed] == ["wallet.balance"]
    actor = conn.execute("SELECT actor FROM economy.reconcile_log").fetchone()[0]
    assert actor == operator.info.user  # the session's login role, not the function owner
    assert drift(conn) == []


def test_public_cannot_call_the_functions(conn, dsn):
    conn.execute("DROP ROLE IF EXISTS economy_test_stranger")
    conn.execute("CREATE ROLE economy_test_stranger LOGIN")
    try:
        with psycopg.connect(
            make_conninfo(dsn, user="economy_test_stranger"), autocommit=True
        ) as stranger:
            for call in (
                "SELECT economy.open_wallet(1)",
                "SELECT economy.wallet_balance(1)",
                "CALL economy.checkpoint_ledger()",
            ):
                with pytest.raises(errors.InsufficientPrivilege):
                    stranger.execute(call)
    finally:
        conn.execute("DROP ROLE IF EXISTS economy_test_stranger")


def test_security_definer_functions_pin_search_path(conn):
    unpinned = conn.execute(
        "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'economy'::regnamespace"
        " AND p.prosecdef AND NOT coalesce(p.proconfig::text LIKE '%search_path=%', false)"
    ).fetchall()
    assert unpinned == []


def test_app_may_dry_run_a_reconcile_which_writes_nothing(app, conn):
    wallet_id = open_wallet(conn, 1)
    post(conn, wallet_id, "10")
    conn.execute("UPDATE economy.wallet SET balance = 0")
    dry = app.execute("SELECT field, fixed FROM economy.reconcile_economy(dry_run => true)")
    assert dry.fetchall() == [("wallet.balance", False)]
    assert conn.execute("SELECT balance FROM economy.wallet").fetchone() == (0,)
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute("SELECT * FROM economy.repair_economy(NULL, NULL, NULL, NULL)")
