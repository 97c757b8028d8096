"""The README's recipe for an app that uses alembic: attach in a revision of
the app's own, detach in its downgrade."""

import textwrap

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

ENV = """
from alembic import context

# alembic's default version table: economy-sync keeps its own
context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
"""

REVISION = """
from alembic import op

revision = "host_0001"
down_revision = None


def upgrade():
    op.execute(
        "CREATE TABLE shop_wallet (id serial PRIMARY KEY, profile_id bigint,"
        " cached_balance integer NOT NULL DEFAULT 0)"
    )
    op.execute(
        "CREATE TABLE shop_tx (id serial PRIMARY KEY,"
        " wallet_id integer NOT NULL REFERENCES shop_wallet, amount integer NOT NULL)"
    )
    op.execute("SELECT economy.attach('shop', 'shop_tx', 'shop_wallet', "
               "wallet_balance_column => 'cached_balance', wallet_owner_column => 'profile_id')")


def downgrade():
    op.execute("SELECT economy.detach('shop')")
    op.execute("DROP TABLE shop_tx, shop_wallet")
"""


def host_app(tmp_path, dsn) -> tuple[Config, sa.Engine]:
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(textwrap.dedent(ENV))
    (tmp_path / "versions" / "host_0001.py").write_text(REVISION)
    config = Config()
    config.set_main_option("script_location", str(tmp_path))
    engine = sa.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=sa.pool.NullPool
    )
    return config, engine


def run(config, engine, action, revision):
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        action(config, revision)


def test_attach_in_the_apps_own_alembic_revision(tmp_path, dsn, conn):
    config, engine = host_app(tmp_path, dsn)
    run(config, engine, command.upgrade, "head")
    conn.execute("INSERT INTO shop_wallet DEFAULT VALUES")
    conn.execute("INSERT INTO shop_tx (wallet_id, amount) VALUES (1, 25)")
    assert conn.execute("SELECT cached_balance FROM shop_wallet").fetchone() == (25,)
    assert attachment_names(conn) == [("economy",), ("shop",)]
    run(config, engine, command.downgrade, "base")
    assert attachment_names(conn) == [("economy",)]  # the package's own tables
    run(config, engine, command.upgrade, "head")
    assert attachment_names(conn) == [("economy",), ("shop",)]


def attachment_names(conn):
    return conn.execute("SELECT name FROM economy.attachments ORDER BY name").fetchall()
