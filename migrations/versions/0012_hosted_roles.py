"""Hosted PostgreSQL roles: attach takes over a sync role that an administrator
made beforehand (the roles recipe), detach keeps it when the installer may not
drop roles, and a refused write of a cached column names the repair

Revision ID: 0012_hosted_roles
Revises: 0011_parked_running_sums
Create Date: 2026-12-07
"""

from pathlib import Path

from alembic import op

revision = "0012_hosted_roles"
down_revision = "0011_parked_running_sums"
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
    run_frozen("0012_hosted_roles.upgrade.sql")


def downgrade() -> None:
    run_frozen("0012_hosted_roles.downgrade.sql")
