"""Holds on every attachment: a held_column caches the sum of a wallet's holds,
and a capture writes its debit to the app's ledger

Revision ID: 0015_attached_holds
Revises: 0014_attached_checkpoint
Create Date: 2026-12-08
"""

from pathlib import Path

from alembic import op

revision = "0015_attached_holds"
down_revision = "0014_attached_checkpoint"
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
    run_frozen("0015_attached_holds.upgrade.sql")


def downgrade() -> None:
    run_frozen("0015_attached_holds.downgrade.sql")
