"""Metadata on every entry, transfers into hot wallets that wait for no other
credit, and several transfers in one call (economy.transfer_many)

Revision ID: 0013_transfers
Revises: 0012_hosted_roles
Create Date: 2026-12-07
"""

from pathlib import Path

from alembic import op

revision = "0013_transfers"
down_revision = "0012_hosted_roles"
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
    run_frozen("0013_transfers.upgrade.sql")


def downgrade() -> None:
    run_frozen("0013_transfers.downgrade.sql")
