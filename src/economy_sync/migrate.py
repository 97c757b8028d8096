"""Install, upgrade and remove the schema with alembic, from Python."""

import io

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from economy_sync._paths import migrations_dir

# Our own, so that economy-sync lives beside a host app's alembic history
# (alembic_version) in the same database. In the search path's first schema.
VERSION_TABLE = "economy_sync_version"
# where installs before 0.2 kept it: moved to VERSION_TABLE by migrations/env.py
LEGACY_VERSION_TABLE = "alembic_version"


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
    """`alembic downgrade base` against dsn: removes the schema (and, at
    base, the version table: nothing is left behind)."""
    _run(dsn, command.downgrade, revision)
    if revision == "base":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {VERSION_TABLE}")  # our constant


def script(from_revision: str | None, to_revision: str) -> str:
    """The SQL that `alembic upgrade` (or downgrade, when to_revision comes
    first) would run from from_revision (None: an empty database), without
    BEGIN/COMMIT: for a caller's own transaction (the Django operation)."""
    config = _config()
    config.output_buffer = io.StringIO()
    config.attributes["url"] = "postgresql+psycopg://"
    config.attributes["transactional_ddl"] = False
    revisions = f"{from_revision or 'base'}:{to_revision}"
    if to_revision == "base" or (from_revision and _is_older(to_revision, from_revision)):
        command.downgrade(config, revisions, sql=True)
    else:
        command.upgrade(config, revisions, sql=True)
    return config.output_buffer.getvalue()


def installed_revision(cursor) -> str | None:
    """The revision a database is at (None: not installed), read with any
    DB-API cursor, inside the caller's transaction."""
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [VERSION_TABLE])
    if not cursor.fetchone()[0]:
        return None
    cursor.execute(f"SELECT version_num FROM {VERSION_TABLE}")  # our constant
    row = cursor.fetchone()
    return row[0] if row else None


def _is_older(revision: str, than: str) -> bool:
    scripts = ScriptDirectory.from_config(_config())
    return any(step.revision == revision for step in scripts.iterate_revisions(than, "base"))


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(conn: psycopg.Connection) -> str | None:
    """The revision the database is at, None when economy-sync is not installed."""
    with conn.cursor() as cursor:
        return installed_revision(cursor)
