"""Bulk writes with no incantation: every multi-row INSERT, INSERT … SELECT and
COPY into a ledger is synced set-based, with no setting

Revision ID: 0010_bulk_writes
Revises: 0009_one_engine_foundations
Create Date: 2026-12-07
"""

from pathlib import Path

from alembic import op

revision = "0010_bulk_writes"
down_revision = "0009_one_engine_foundations"
branch_labels = None
depends_on = None

# This revision applies its own frozen SQL (migrations/frozen/): later edits of
# sql/ never change what it does.
FROZEN = Path(__file__).resolve().parent.parent / "frozen"


def run_frozen(name: str) -> None:
    script = (FROZEN / name).read_text()
    if op.get_context().as_sql:  # alembic upgrade --sql: the script verbatim
        op.get_context().impl.static_output(script)
    else:
        op.get_bind().connection.driver_connection.execute(script)


def upgrade() -> None:
    run_frozen("0010_bulk_writes.upgrade.sql")


def downgrade() -> None:
    run_frozen("0010_bulk_writes.downgrade.sql")
