"""Alembic environment: runs each revision against DATABASE_URL (or a given connection)."""

import os

import sqlalchemy as sa
from alembic import context


def sqlalchemy_url(libpq_url: str) -> str:
    """SQLAlchemy's spelling of a libpq URL, for its psycopg 3 dialect."""
    for prefix in ("postgresql://", "postgres://"):
        if libpq_url.startswith(prefix):
            return "postgresql+psycopg://" + libpq_url.removeprefix(prefix)
    return libpq_url


def database_url() -> str:
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit(
            "Set DATABASE_URL to a libpq URL, e.g. postgresql://user@localhost:5432/db"
        )
    return sqlalchemy_url(url)


def run_migrations(connection: sa.Connection) -> None:
    context.configure(connection=connection, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    # `transactional_ddl: False` (economy_sync.migrate.script): no BEGIN/COMMIT
    # around the script, for a caller that runs it inside its own transaction
    context.configure(
        url=context.config.attributes.get("url") or database_url(),
        literal_binds=True,
        transactional_ddl=context.config.attributes.get("transactional_ddl", True),
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    given = context.config.attributes.get("connection")
    if given is not None:
        run_migrations(given)
    else:
        engine = sa.create_engine(database_url(), poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            run_migrations(connection)
