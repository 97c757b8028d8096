"""Hot wallets (credits parked instead of queueing on the wallet row); set-based batches

Revision ID: 0005_hot_wallets_and_batches
Revises: 0004_history_and_holds
Create Date: 2026-11-26
"""

from pathlib import Path

from alembic import op

revision = "0005_hot_wallets_and_batches"
down_revision = "0004_history_and_holds"
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
    run_frozen("0005_hot_wallets_and_batches.upgrade.sql")


def downgrade() -> None:
    run_frozen("0005_hot_wallets_and_batches.downgrade.sql")
