"""alembic installs and removes the schema; the schema it builds is the one sql/ describes."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from helpers import (
    SEED_ATTACH,
    SEED_TABLES,
    attached_drift,
    open_wallet,
    pay,
    post,
    rows_updated,
    run,
)
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from economy_sync import migrate
from economy_sync._paths import SOURCE_ROOT, migrations_dir, schema_sql
from economy_sync.pg_binaries import find_pg_ctl

ROLES = ("economy_app", "economy_operator")


def schema_exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regnamespace('economy') IS NOT NULL").fetchone()[0]


def libpq_url(dsn: str) -> str:
    parts = conninfo_to_dict(dsn)
    return f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"


def dump_schema(dsn: str) -> str:
    """pg_dump of schema economy, minus comments and the session settings."""
    pg_dump = Path(find_pg_ctl()).with_name("pg_dump")
    parts = conninfo_to_dict(dsn)
    out = subprocess.run(
        [
            pg_dump,
            "--schema-only",
            "--schema=economy",
            "-h",
            parts["host"],
            "-p",
            str(parts["port"]),
            "-U",
            parts["user"],
            parts["dbname"],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(
        line
        for line in out.splitlines()
        if line
        and not line.startswith(
            ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")
        )
    )


def revisions() -> list[str]:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return [
        script.revision
        for script in ScriptDirectory.from_config(config).walk_revisions("base", "heads")
    ][::-1]


def test_single_head_revision():
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def test_upgrade_downgrade_upgrade(empty_dsn):
    migrate.upgrade(empty_dsn)
    assert schema_exists(empty_dsn)
    migrate.downgrade(empty_dsn)
    assert not schema_exists(empty_dsn)
    migrate.upgrade(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        wallet_id = open_wallet(conn, 1)
        post(conn, wallet_id, "5")
        assert conn.execute("SELECT count(*) FROM economy.balance_drift()").fetchone() == (0,)


def test_up_down_consistency_of_every_revision(empty_dsn):
    """Each downgrade gives back exactly the schema of the revision before it."""
    previous = "base"
    for revision in revisions():
        before = dump_schema(empty_dsn) if previous != "base" else None
        migrate.upgrade(empty_dsn, revision)
        migrate.downgrade(empty_dsn, previous)
        if before is not None:
            assert dump_schema(empty_dsn) == before, f"downgrade from {revision}"
        migrate.upgrade(empty_dsn, revision)
        previous = revision
    with psycopg.connect(empty_dsn) as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()


def test_schema_built_by_migrations_equals_sql_dir(empty_dsn, second_empty_dsn):
    migrate.upgrade(empty_dsn)
    with psycopg.connect(second_empty_dsn, autocommit=True) as conn:
        conn.execute(schema_sql())
    assert dump_schema(empty_dsn) == dump_schema(second_empty_dsn)


def test_alembic_command_line_from_repository_root(empty_dsn):
    env = {**os.environ, "DATABASE_URL": libpq_url(empty_dsn)}
    alembic = Path(os.sys.executable).with_name("alembic")
    for action in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"]):
        done = subprocess.run(
            [alembic, *action], cwd=SOURCE_ROOT, env=env, check=True, capture_output=True, text=True
        )
        assert "Running " + action[0] in done.stderr  # alembic.ini's logging, as alembic says
    assert schema_exists(empty_dsn)


@pytest.mark.parametrize(
    "database_url",
    ["postgresql://nobody@127.0.0.1:1/nowhere", "host=127.0.0.1 port=1 dbname=nowhere"],
)
def test_alembic_says_in_one_line_what_went_wrong(database_url):
    done = subprocess.run(
        [Path(sys.executable).with_name("alembic"), "upgrade", "head"],
        cwd=SOURCE_ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("alembic: connection failed")


def test_second_database_installs_and_removes_while_first_uses_the_roles(
    dsn, second_empty_dsn, login
):
    with psycopg.connect(dsn, autocommit=True) as first:
        wallet_id = open_wallet(first, 1)
        migrate.upgrade(second_empty_dsn)
        migrate.downgrade(second_empty_dsn)
        assert not schema_exists(second_empty_dsn)
        roles = first.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [list(ROLES)])
        assert sorted(row[0] for row in roles) == sorted(ROLES)
        post(login("economy_app"), wallet_id, "1")
        migrate.upgrade(second_empty_dsn)
    assert schema_exists(second_empty_dsn)


@pytest.mark.parametrize("revision", revisions())
def test_each_revision_runs_its_own_frozen_sql(revision):
    """What a revision runs is its frozen script (migrations/frozen/), whatever
    sql/ says today: edits there never change history."""
    previous = dict(zip(revisions()[1:], revisions(), strict=False)).get(revision)
    frozen = (migrations_dir() / "frozen" / f"{revision}.upgrade.sql").read_text()
    assert frozen.strip() in migrate.script(previous, revision)


def test_offline_sql_script_installs_the_same_schema(empty_dsn, second_empty_dsn):
    """`alembic upgrade head --sql` (for review or squawk) emits a script that works."""
    env = {**os.environ, "DATABASE_URL": libpq_url(empty_dsn)}
    alembic = Path(os.sys.executable).with_name("alembic")
    script = subprocess.run(
        [alembic, "upgrade", "head", "--sql"],
        cwd=SOURCE_ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(script)
    migrate.upgrade(second_empty_dsn)
    assert dump_schema(empty_dsn) == dump_schema(second_empty_dsn)


def test_lives_beside_a_host_apps_alembic_history(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('host_app_0042')")
        migrate.upgrade(empty_dsn)
        assert migrate.current_revision(conn) == migrate.head_revision()
        migrate.downgrade(empty_dsn)
        assert migrate.current_revision(conn) is None
        host = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        assert host == [("host_app_0042",)]


def test_an_install_that_kept_its_revision_in_alembic_version_is_adopted(empty_dsn):
    """Installs before 0.2 used alembic's default table."""
    migrate.upgrade(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {migrate.VERSION_TABLE}")
        conn.execute(  # alembic's own table, as alembic creates it
            "CREATE TABLE alembic_version (version_num varchar(32) NOT NULL,"
            " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        conn.execute("INSERT INTO alembic_version VALUES (%s)", [migrate.head_revision()])
        migrate.upgrade(empty_dsn)
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)


def test_downgrading_hot_wallets_folds_their_parked_credits(empty_dsn):
    migrate.upgrade(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        wallet_id = open_wallet(conn, 1)
        conn.execute("SELECT economy.set_hot(%s)", [wallet_id])
        post(conn, wallet_id, "5", kind="prize")
        migrate.downgrade(empty_dsn, "0004_history_and_holds")
        assert conn.execute("SELECT * FROM economy.balance_drift()").fetchall() == []
        assert conn.execute(
            "SELECT balance FROM economy.wallet WHERE id = %s", [wallet_id]
        ).fetchone() == (5,)


def test_attachments_made_before_0006_are_regenerated_up_and_down(empty_dsn):
    """Upgrading gives an existing attachment the new functions (hot wallets);
    downgrading folds its parked credits and attaches it again as 0005 did."""
    migrate.upgrade(empty_dsn, "0005_hot_wallets_and_batches")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(SEED_TABLES)
        conn.execute(SEED_ATTACH)
        conn.execute("INSERT INTO app_profile DEFAULT VALUES")
        conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1), (NULL)")
        pay(conn, 1, 100)
        migrate.upgrade(empty_dsn)
        conn.execute("SELECT economy.set_hot(2, attachment => 'seed')")
        pay(conn, 2, 7, "fee")
        pay(conn, 1, 5)
        assert conn.execute("SELECT count(*) FROM economy.attached_hot_credit").fetchone() == (1,)
        assert attached_drift(conn, "seed") == []
        migrate.downgrade(empty_dsn, "0005_hot_wallets_and_batches")
        assert conn.execute("SELECT id, cached_balance FROM app_wallet ORDER BY id").fetchall() == [
            (1, 105),
            (2, 7),
        ]
        pay(conn, 2, 1, "fee")  # synced by 0005's functions
        assert attached_drift(conn, "seed") == []
        migrate.upgrade(empty_dsn)
        pay(conn, 1, 1)
        assert attached_drift(conn, "seed") == []
        assert conn.execute("SELECT cached_balance FROM app_wallet ORDER BY id").fetchall() == [
            (106,),
            (8,),
        ]


def test_attachments_made_before_0008_get_the_statement_sync_up_and_down(empty_dsn):
    """Upgrading gives an existing attachment its statement trigger; downgrading
    removes it, and an INSERT made with the setting is synced row by row again."""

    def statement_insert(conn, wallet, amount):
        with conn.transaction():
            conn.execute("SET LOCAL economy.sync = 'statement'")
            conn.execute(
                "INSERT INTO app_transaction (wallet_id, amount, reason)"
                " VALUES (%s, %s, 'prize'), (%s, %s, 'prize')",
                [wallet, amount, wallet, amount],
            )

    def statement_triggers(conn):
        return conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'economy_seed_sync_rows'"
        ).fetchone()[0]

    migrate.upgrade(empty_dsn, "0007_batch_start_balances")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(SEED_TABLES)
        conn.execute(SEED_ATTACH)
        conn.execute("INSERT INTO app_profile DEFAULT VALUES")
        conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")
        migrate.upgrade(empty_dsn)
        assert statement_triggers(conn) == 1
        statement_insert(conn, 1, 10)
        migrate.downgrade(empty_dsn, "0007_batch_start_balances")
        assert statement_triggers(conn) == 0
        statement_insert(conn, 1, 1)
        migrate.upgrade(empty_dsn)
        statement_insert(conn, 1, 100)
        assert conn.execute("SELECT cached_balance FROM app_wallet").fetchone() == (222,)
        assert attached_drift(conn, "seed") == []


def test_attachments_made_before_0010_sync_bulk_writes_by_statement_up_and_down(empty_dsn):
    """Upgrading to 0010 makes every multi-row INSERT into an existing
    attachment set-based (each wallet written once), a partitioned ledger
    included; downgrading syncs them row by row again; nothing drifts."""

    def wallet_writes(conn, rows):
        return rows_updated(
            conn,
            ["app_wallet"],
            lambda: conn.execute(
                "INSERT INTO app_transaction (wallet_id, amount, reason)"
                " SELECT 1, 1, 'prize' FROM generate_series(1, %s)",
                [rows],
            ),
        )["app_wallet"]

    migrate.upgrade(empty_dsn, "0009_one_engine_foundations")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(SEED_TABLES)
        conn.execute(SEED_ATTACH)
        conn.execute(
            "CREATE TABLE part_ledger (id bigserial, wallet_id integer NOT NULL,"
            " amount integer NOT NULL) PARTITION BY HASH (id);"
            "CREATE TABLE part_ledger_0 PARTITION OF part_ledger"
            " FOR VALUES WITH (MODULUS 1, REMAINDER 0);"
            "CREATE TABLE part_wallet (id integer PRIMARY KEY,"
            " balance integer NOT NULL DEFAULT 0);"
            "INSERT INTO part_wallet VALUES (1)"
        )
        conn.execute(
            "SELECT economy.attach('part', 'part_ledger', 'part_wallet',"
            " wallet_balance_column => 'balance')"
        )
        conn.execute("INSERT INTO app_profile DEFAULT VALUES")
        conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")
        migrate.upgrade(empty_dsn)
        assert wallet_writes(conn, 50) == 1
        conn.execute("INSERT INTO part_ledger (wallet_id, amount) VALUES (1, 5)")
        conn.execute("INSERT INTO part_ledger (wallet_id, amount) VALUES (1, 5), (1, 5)")
        migrate.downgrade(empty_dsn, "0009_one_engine_foundations")
        assert wallet_writes(conn, 50) == 50
        conn.execute("INSERT INTO part_ledger (wallet_id, amount) VALUES (1, 5), (1, 5)")
        migrate.upgrade(empty_dsn)
        assert wallet_writes(conn, 50) == 1
        conn.execute("INSERT INTO part_ledger (wallet_id, amount) VALUES (1, 5)")
        assert conn.execute("SELECT cached_balance FROM app_wallet").fetchone() == (150,)
        assert conn.execute("SELECT balance FROM part_wallet").fetchone() == (30,)
        assert attached_drift(conn, "seed") == []
        assert attached_drift(conn, "part") == []


def test_parked_credits_made_before_0011_become_running_sums_up_and_down(empty_dsn):
    """Upgrading to 0011 turns each hot wallet's parked rows into one running sum
    (and back); the exact figures never change and nothing drifts."""

    def parked(conn):
        return conn.execute(
            "SELECT wallet_id, count(*), sum(amount) FROM economy.attached_hot_credit"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall()

    def exact(conn):
        return [
            conn.execute("SELECT economy.wallet_balance(%s, attachment => 'seed')", [w]).fetchone()[
                0
            ]
            for w in (1, 2)
        ]

    migrate.upgrade(empty_dsn, "0010_bulk_writes")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(SEED_TABLES)
        conn.execute(SEED_ATTACH)
        conn.execute("INSERT INTO app_profile DEFAULT VALUES")
        conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1), (NULL)")
        for wallet in (1, 2):
            conn.execute("SELECT economy.set_hot(%s, attachment => 'seed')", [wallet])
            for amount in (3, 4, 5):
                pay(conn, wallet, amount, "fee")
        assert parked(conn) == [(1, 3, 12), (2, 3, 12)]
        migrate.upgrade(empty_dsn)
        assert parked(conn) == [(1, 1, 12), (2, 1, 12)] and exact(conn) == [12, 12]
        pay(conn, 1, 1, "fee")
        pay(conn, 2, -2, "payout")  # folds: wallet 2 keeps a zero-sum row and its fold row
        assert exact(conn) == [13, 10]
        migrate.downgrade(empty_dsn, "0010_bulk_writes")
        assert parked(conn) == [(1, 1, 13)] and exact(conn) == [13, 10]
        pay(conn, 1, 1, "fee")
        migrate.upgrade(empty_dsn)
        assert parked(conn) == [(1, 1, 14)] and exact(conn) == [14, 10]
        assert attached_drift(conn, "seed") == []


def test_the_wheel_alone_installs_the_schema(empty_dsn, tmp_path):
    """`economy-sync migrate` from an installed wheel, far from any checkout: the
    wheel carries sql/ and migrations/."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", tmp_path, SOURCE_ROOT], check=True)
    (wheel,) = tmp_path.glob("economy_sync-*.whl")
    installed = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", installed, wheel], check=True)
    program = (
        "import sys; from economy_sync import _paths; from economy_sync.cli import main;"
        f" assert str(_paths.migrations_dir()).startswith({str(installed)!r});"
        " sys.exit(main(['migrate', '--dsn', sys.argv[1]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, empty_dsn],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(empty_dsn) as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()


def test_a_database_owner_who_is_no_superuser_installs_beside_the_apps_alembic(empty_dsn):
    """The README's path for an existing database: its owner, neither superuser nor
    CREATEROLE, with ADMIN OPTION on economy_app (the roles exist already: the
    test template's install made them; on a managed server, the tests' own role is
    such an owner), installs with `economy-sync migrate` beside the app's own
    alembic history, then downgrades and upgrades again."""
    owner_dsn = empty_dsn
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        superuser = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        if admin.execute(superuser).fetchone()[0]:
            owner = "economy_test_db_owner"
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [owner]).fetchone():
                admin.execute(f"CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB")
            admin.execute(f"GRANT economy_app TO {owner} WITH ADMIN OPTION")
            database = conninfo_to_dict(empty_dsn)["dbname"]
            admin.execute(f'ALTER DATABASE "{database}" OWNER TO {owner}')
            owner_dsn = make_conninfo(empty_dsn, user=owner)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('host_app_0042')")
        done = run("migrate", dsn=owner_dsn)
        assert done.returncode == 0, done.stderr
        assert migrate.current_revision(conn) == migrate.head_revision()
        migrate.downgrade(owner_dsn, "0004_history_and_holds")
        migrate.upgrade(owner_dsn)
        assert migrate.current_revision(conn) == migrate.head_revision()
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("host_app_0042",)
        ]
