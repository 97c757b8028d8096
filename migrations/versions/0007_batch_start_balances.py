"""Batches read each wallet's balance once, with its lock

Revision ID: 0007_batch_start_balances
Revises: 0006_attached_hot_wallets
Create Date: 2026-11-26
"""

from pathlib import Path

from alembic import op

revision = "0007_batch_start_balances"
down_revision = "0006_attached_hot_wallets"
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
    run_frozen("0007_batch_start_balances.upgrade.sql")


def downgrade() -> None:
    run_frozen("0007_batch_start_balances.downgrade.sql")
