"""Every rejected input: a clear error of a known class, and nothing written."""

from decimal import Decimal

import psycopg
import pytest
from helpers import open_wallet, post, state
from psycopg import errors


@pytest.fixture
def funded(conn):
    """Two wallets: 1 with 100.00 (no overdraft), 2 empty with a 10.00 overdraft."""
    first = open_wallet(conn, 1)
    second = open_wallet(conn, 2, overdraft_limit="10")
    post(conn, first, "100", kind="prize")
    return first, second


BAD_AMOUNTS = {
    "null": (None, errors.NotNullViolation),
    "zero": (Decimal("0"), errors.CheckViolation),
    "nan": (Decimal("NaN"), errors.CheckViolation),
    "infinity": (Decimal("Infinity"), errors.CheckViolation),
    "minus_infinity": (Decimal("-Infinity"), errors.CheckViolation),
    "three_decimals": (Decimal("0.005"), errors.CheckViolation),
    "many_decimals": (Decimal("10.123456"), errors.CheckViolation),
    "too_large": (Decimal("1e18"), errors.CheckViolation),
    "too_small": (Decimal("-1e18"), errors.CheckViolation),
}


@pytest.mark.parametrize("name", BAD_AMOUNTS)
def test_post_transaction_refuses_bad_amount(conn, funded, name):
    amount, error = BAD_AMOUNTS[name]
    before = state(conn)
    with pytest.raises(error):
        post(conn, funded[0], amount)
    assert state(conn) == before


@pytest.mark.parametrize("name", BAD_AMOUNTS)
def test_plain_insert_refuses_bad_amount(conn, funded, name):
    amount, error = BAD_AMOUNTS[name]
    before = state(conn)
    with pytest.raises(error):
        conn.execute(
            "INSERT INTO economy.transaction (wallet_id, amount, kind) VALUES (%s, %s, 'reward')",
            [funded[0], amount],
        )
    assert state(conn) == before


def test_amount_is_never_silently_rounded_by_text_input(conn, funded):
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="at_most_2_decimals"):
        conn.execute("SELECT economy.post_transaction(%s, '0.005', 'reward')", [funded[0]])
    assert state(conn) == before


def test_unknown_wallet_is_refused(conn, funded):
    before = state(conn)
    with pytest.raises(errors.ForeignKeyViolation, match="wallet"):
        post(conn, 999, "1")
    assert state(conn) == before


def test_unknown_kind_is_refused(conn, funded):
    before = state(conn)
    with pytest.raises(errors.ForeignKeyViolation, match="kind"):
        post(conn, funded[0], "1", kind="bribe")
    assert state(conn) == before


def test_null_kind_is_refused(conn, funded):
    before = state(conn)
    with pytest.raises(errors.NotNullViolation):
        post(conn, funded[0], "1", kind=None)
    assert state(conn) == before


def test_debit_below_zero_without_overdraft_is_refused(conn, funded):
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="overdraft"):
        post(conn, funded[0], "-100.01", kind="purchase")
    assert state(conn) == before


def test_debit_below_overdraft_limit_is_refused(conn, funded):
    post(conn, funded[1], "-10", kind="purchase")
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="overdraft"):
        post(conn, funded[1], "-0.01", kind="purchase")
    assert state(conn) == before


def test_overdraft_rolls_back_whole_transaction(connect, funded):
    conn = connect(autocommit=False)
    before = state(conn)
    post(conn, funded[0], "5")
    with pytest.raises(errors.CheckViolation):
        post(conn, funded[0], "-1000", kind="purchase")
    conn.rollback()
    assert state(conn) == before


def test_multi_row_insert_with_one_overdraft_writes_nothing(conn, funded):
    before = state(conn)
    with pytest.raises(errors.CheckViolation):
        conn.execute(
            "INSERT INTO economy.transaction (wallet_id, amount, kind)"
            " VALUES (%s, 5, 'reward'), (%s, -500, 'fee')",
            funded,
        )
    assert state(conn) == before


@pytest.mark.parametrize("amount", [Decimal("0"), Decimal("-5"), None, Decimal("NaN")])
def test_transfer_of_non_positive_amount_is_refused(conn, funded, amount):
    before = state(conn)
    with pytest.raises((errors.CheckViolation, errors.NotNullViolation)):
        conn.execute("SELECT economy.transfer(%s, %s, %s::numeric)", [*funded, amount])
    assert state(conn) == before


def test_transfer_to_same_wallet_is_refused(conn, funded):
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="itself"):
        conn.execute("SELECT economy.transfer(%s, %s, 1)", [funded[0], funded[0]])
    assert state(conn) == before


def test_transfer_from_unknown_wallet_is_refused(conn, funded):
    before = state(conn)
    with pytest.raises(errors.ForeignKeyViolation):
        conn.execute("SELECT economy.transfer(999, %s, 1)", [funded[0]])
    assert state(conn) == before


def test_transfer_to_unknown_wallet_writes_nothing(conn, funded):
    before = state(conn)
    with pytest.raises(errors.ForeignKeyViolation):
        conn.execute("SELECT economy.transfer(%s, 999, 1)", [funded[0]])
    assert state(conn) == before


def test_transfer_beyond_overdraft_writes_nothing(conn, funded):
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="overdraft"):
        conn.execute("SELECT economy.transfer(%s, %s, 100.01)", funded)
    assert state(conn) == before


def test_transfer_with_three_decimals_writes_nothing(conn, funded):
    before = state(conn)
    with pytest.raises(errors.CheckViolation):
        conn.execute("SELECT economy.transfer(%s, %s, 1.001)", funded)
    assert state(conn) == before


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE economy.transaction SET amount = amount * 2",
        "UPDATE economy.transaction SET memo = 'x' WHERE false",
        "DELETE FROM economy.transaction",
        "TRUNCATE economy.transaction CASCADE",
    ],
    ids=["update", "update_no_rows", "delete", "truncate"],
)
def test_ledger_is_append_only(conn, funded, statement):
    before = state(conn)
    with pytest.raises(errors.RestrictViolation, match="append-only"):
        conn.execute(statement)
    assert state(conn) == before


def test_reversing_twice_is_refused(conn, funded):
    entry = post(conn, funded[0], "5")
    conn.execute("SELECT economy.reverse_transaction(%s)", [entry["id"]])
    before = state(conn)
    with pytest.raises(errors.UniqueViolation, match="already reversed"):
        conn.execute("SELECT economy.reverse_transaction(%s)", [entry["id"]])
    assert state(conn) == before


def test_reversing_a_reversal_is_refused(conn, funded):
    entry = post(conn, funded[0], "5")
    reversal_id = conn.execute("SELECT id FROM economy.reverse_transaction(%s)", [entry["id"]])
    reversal_id = reversal_id.fetchone()[0]
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="is a reversal"):
        conn.execute("SELECT economy.reverse_transaction(%s)", [reversal_id])
    assert state(conn) == before


def test_reversing_unknown_entry_is_refused(conn, funded):
    before = state(conn)
    with pytest.raises(errors.NoDataFound):
        conn.execute("SELECT economy.reverse_transaction(424242)")
    assert state(conn) == before


def test_reversal_that_would_overdraw_is_refused(conn, funded):
    first = funded[0]
    post(conn, first, "-100", kind="purchase")
    prize = conn.execute(
        "SELECT id FROM economy.transaction WHERE wallet_id = %s AND kind = 'prize'", [first]
    ).fetchone()[0]
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="overdraft"):
        conn.execute("SELECT economy.reverse_transaction(%s)", [prize])
    assert state(conn) == before


@pytest.mark.parametrize(
    "values",
    [
        "(%(w)s, -1, 'prize', %(id)s)",
        "(%(w)s, -100, 'reward', %(id)s)",
        "(%(o)s, -100, 'prize', %(id)s)",
    ],
    ids=["wrong_amount", "wrong_kind", "wrong_wallet"],
)
def test_plain_insert_of_a_mismatched_reversal_is_refused(conn, funded, values):
    prize = conn.execute("SELECT id FROM economy.transaction WHERE kind = 'prize'").fetchone()[0]
    before = state(conn)
    with pytest.raises(errors.CheckViolation, match="reversal"):
        conn.execute(
            "INSERT INTO economy.transaction (wallet_id, amount, kind, reverses_id) VALUES "
            + values,
            {"w": funded[0], "o": funded[1], "id": prize},
        )
    assert state(conn) == before


@pytest.mark.parametrize(
    "overdraft, error",
    [(Decimal("-1"), errors.CheckViolation), (Decimal("0.001"), errors.CheckViolation)],
    ids=["negative", "three_decimals"],
)
def test_open_wallet_refuses_bad_overdraft(conn, overdraft, error):
    before = state(conn)
    with pytest.raises(error):
        conn.execute("SELECT economy.open_wallet(5, %s::numeric)", [overdraft])
    assert state(conn) == before


def test_open_wallet_refuses_null_user(conn):
    with pytest.raises(errors.NotNullViolation):
        conn.execute("SELECT economy.open_wallet(NULL)")
    assert state(conn).wallets == ()


def test_error_messages_name_the_problem(conn, funded):
    with pytest.raises(psycopg.Error) as caught:
        post(conn, funded[0], "-1000", kind="purchase")
    assert str(caught.value).startswith(f"wallet {funded[0]} would go below its overdraft limit")
