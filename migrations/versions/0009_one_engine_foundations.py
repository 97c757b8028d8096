"""One engine, first steps: the package's own tables are the attachment named
economy; drift_summary, attachment_sql, reattach; exact and deadlock-free attachments

Revision ID: 0009_one_engine_foundations
Revises: 0008_attached_statement_sync
Create Date: 2026-12-07
"""

from pathlib import Path

from alembic import op

revision = "0009_one_engine_foundations"
down_revision = "0008_attached_statement_sync"
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
    run_frozen("0009_one_engine_foundations.upgrade.sql")


def downgrade() -> None:
    run_frozen("0009_one_engine_foundations.downgrade.sql")
