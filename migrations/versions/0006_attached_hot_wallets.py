"""Hot wallets on attached tables: set_hot, wallet_balance and fold_hot_wallets take attachment=

Revision ID: 0006_attached_hot_wallets
Revises: 0005_hot_wallets_and_batches
Create Date: 2026-11-26
"""

from pathlib import Path

from alembic import op

revision = "0006_attached_hot_wallets"
down_revision = "0005_hot_wallets_and_batches"
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
    run_frozen("0006_attached_hot_wallets.upgrade.sql")


def downgrade() -> None:
    run_frozen("0006_attached_hot_wallets.downgrade.sql")
