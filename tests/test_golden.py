"""The SQL generated for a reference attachment (tests/helpers.py's
SEED_ATTACH_WITH_HOLDS: integer wallet caches, numeric(10, 2) profiles, an
ownerless treasury, an overdraft limit, holds in pending_balance), compared
with its committed render, pg_regress style: a change of a template shows as a
diff of what an attachment runs. After a deliberate change, write the new render
with ECONOMY_SYNC_WRITE_GOLDEN=1 and read the diff before committing it."""

import os
import re
from pathlib import Path

from helpers import SEED_ATTACH_WITH_HOLDS, SEED_HELD_COLUMN, SEED_TABLES

GOLDEN = Path(__file__).parent / "golden" / "seed_attachment.sql"


def rendered(conn) -> str:
    """Every generated function, then every trigger, as the database has them,
    with what differs between databases (the sync role's name, table oids) named."""
    functions = conn.execute(
        "SELECT pg_get_functiondef(to_regprocedure(f.signature))"
        " FROM economy.attached_functions('seed') f"
        " WHERE to_regprocedure(f.signature) IS NOT NULL ORDER BY f.function_name"
    ).fetchall()
    triggers = conn.execute(
        "SELECT t.definition FROM economy.attached_triggers(economy.attachment('seed')) t"
        " ORDER BY t.trigger_name, t.tbl::text"
    ).fetchall()
    text = "\n".join([row[0] for row in functions] + [row[0] + ";" for row in triggers])
    text = re.sub(r"economy_sync_[0-9a-f]{16}", "<sync role>", text)
    return re.sub(r"\b\d+::regclass", "<oid>::regclass", text)


def test_the_reference_attachment_renders_as_committed(conn):
    conn.execute(SEED_TABLES)
    conn.execute(SEED_HELD_COLUMN)
    conn.execute(SEED_ATTACH_WITH_HOLDS)
    text = rendered(conn)
    if os.environ.get("ECONOMY_SYNC_WRITE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "the generated SQL changed: see tests/test_golden.py"
