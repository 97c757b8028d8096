"""Install, upgrade and remove the schema with alembic, from Python."""

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from economy_sync._paths import migrations_dir


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def _engine(dsn: str) -> sa.Engine:
    # creator= takes any libpq connection string, URL or key=value.
    return sa.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=sa.pool.NullPool
    )


def _run(dsn: str, action, revision: str) -> None:
    config = _config()
    with _engine(dsn).begin() as connection:
        config.attributes["connection"] = connection
        action(config, revision)


def upgrade(dsn: str, revision: str = "head") -> None:
    """`alembic upgrade head` against dsn."""
    _run(dsn, command.upgrade, revision)


def downgrade(dsn: str, revision: str = "base") -> None:
    """`alembic downgrade base` against dsn: removes the schema."""
    _run(dsn, command.downgrade, revision)


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(conn: psycopg.Connection) -> str | None:
    """The revision the database is at, None when alembic never ran there."""
    engine = sa.create_engine(
        "postgresql+psycopg://", creator=lambda: conn, poolclass=sa.pool.StaticPool
    )
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
