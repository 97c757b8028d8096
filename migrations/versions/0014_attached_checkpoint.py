"""A ledger checkpoint for every attachment: a drift check sums only newer
entries, exact also when the app updates or deletes old ones

Revision ID: 0014_attached_checkpoint
Revises: 0013_transfers
Create Date: 2026-12-07
"""

from pathlib import Path

from alembic import op

revision = "0014_attached_checkpoint"
down_revision = "0013_transfers"
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
    run_frozen("0014_attached_checkpoint.upgrade.sql")


def downgrade() -> None:
    run_frozen("0014_attached_checkpoint.downgrade.sql")
