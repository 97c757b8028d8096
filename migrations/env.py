"""Alembic environment: runs each revision against DATABASE_URL (or a given connection)."""

import os
from logging.config import fileConfig

import psycopg
import sqlalchemy as sa
from alembic import context

from economy_sync.errors import redact
from economy_sync.migrate import LEGACY_VERSION_TABLE, VERSION_TABLE

# `alembic …` from the repository root: alembic.ini's logging (each revision run
# is said on stderr); economy_sync.migrate passes no file and keeps quiet
if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name)


def sqlalchemy_url(libpq_url: str) -> str:
    """SQLAlchemy's spelling of a libpq URL, for its psycopg 3 dialect."""
    for prefix in ("postgresql://", "postgres://"):
        if libpq_url.startswith(prefix):
            return "postgresql+psycopg://" + libpq_url.removeprefix(prefix)
    return libpq_url


def libpq_dsn() -> str:
    dsn = context.config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not dsn:
        raise SystemExit(
            "Set DATABASE_URL to a libpq URL, e.g. postgresql://user@localhost:5432/db"
        )
    return dsn


def adopt_legacy_version_table(connection: sa.Connection) -> None:
    """Installs before 0.2 kept their revision in alembic's default table,
    which a host app's alembic uses too: move it to ours, once."""
    has = lambda table: connection.execute(  # noqa: E731
        sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}
    ).scalar()
    if has(VERSION_TABLE) or not has(LEGACY_VERSION_TABLE):
        return
    ours = {script.revision for script in context.script.walk_revisions()}
    found = connection.execute(
        sa.text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}")  # our constants
    ).scalars()
    mine = [revision for revision in found if revision in ours]
    if not mine:
        return
    connection.execute(
        sa.text(
            f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL,"
            f" CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
        )
    )
    connection.execute(sa.text(f"INSERT INTO {VERSION_TABLE} VALUES (:v)"), {"v": mine[0]})
    connection.execute(
        sa.text(f"DELETE FROM {LEGACY_VERSION_TABLE} WHERE version_num = :v"), {"v": mine[0]}
    )
    if not connection.execute(sa.text(f"SELECT count(*) FROM {LEGACY_VERSION_TABLE}")).scalar():
        connection.execute(sa.text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))


def run_migrations(connection: sa.Connection) -> None:
    adopt_legacy_version_table(connection)
    context.configure(connection=connection, transactional_ddl=True, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    # `transactional_ddl: False` (economy_sync.migrate.script): no BEGIN/COMMIT
    # around the script, for a caller that runs it inside its own transaction
    context.configure(
        url=context.config.attributes.get("url") or sqlalchemy_url(libpq_dsn()),
        literal_binds=True,
        transactional_ddl=context.config.attributes.get("transactional_ddl", True),
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    given = context.config.attributes.get("connection")
    if given is not None:
        run_migrations(given)
    else:
        # any libpq connection string (URL or key=value), as economy_sync.migrate takes
        dsn = libpq_dsn().replace("postgresql+psycopg://", "postgresql://", 1)
        engine = sa.create_engine(
            "postgresql+psycopg://",
            creator=lambda: psycopg.connect(dsn),
            poolclass=sa.pool.NullPool,
        )
        try:
            # one transaction, committed at the end (as economy_sync.migrate does)
            with engine.begin() as connection:
                run_migrations(connection)
        except (sa.exc.DBAPIError, psycopg.Error) as error:  # one line for a person, no traceback
            reason = getattr(error, "orig", None) or error
            raise SystemExit(f"alembic: {redact(str(reason).strip().splitlines()[0])}") from None
