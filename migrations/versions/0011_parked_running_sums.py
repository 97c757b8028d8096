"""An attached hot wallet's parked credits kept as running sums: the overflow
guard reads a few rows per credit, however many credits are parked

Revision ID: 0011_parked_running_sums
Revises: 0010_bulk_writes
Create Date: 2026-12-07
"""

from pathlib import Path

from alembic import op

revision = "0011_parked_running_sums"
down_revision = "0010_bulk_writes"
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
    run_frozen("0011_parked_running_sums.upgrade.sql")


def downgrade() -> None:
    run_frozen("0011_parked_running_sums.downgrade.sql")
