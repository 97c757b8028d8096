"""Attached ledgers: an INSERT or COPY made with economy.sync = 'statement' syncs per statement

Revision ID: 0008_attached_statement_sync
Revises: 0007_batch_start_balances
Create Date: 2026-11-26
"""

from pathlib import Path

from alembic import op

revision = "0008_attached_statement_sync"
down_revision = "0007_batch_start_balances"
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
    run_frozen("0008_attached_statement_sync.upgrade.sql")


def downgrade() -> None:
    run_frozen("0008_attached_statement_sync.downgrade.sql")
