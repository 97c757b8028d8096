"""A hosted PostgreSQL's roles: an installer that may not create roles (no
CREATEROLE; on 16+ also one with CREATEROLE when the roles exist already) gets
them from an administrator, who runs the recipe `economy-sync roles --sql`
prints. It then installs, attaches the tables of another owner, upgrades and
downgrades with the attachment present, and detaches; what it may not do is
one line naming the remedy."""

import os
import subprocess
import sys

import psycopg
import pytest
from helpers import SEED_ATTACH, SEED_TABLES, pay, run, seed_figures
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from economy_sync import api, migrate, roles
from economy_sync._paths import SOURCE_ROOT

INSTALLER = "economy_test_hosted_installer"
SHOP = "economy_test_hosted_shop"


def create_login(admin, role: str, *attributes: str) -> None:
    admin.execute(
        sql.SQL(
            "DO $$ BEGIN CREATE ROLE {} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ).format(sql.Identifier(role))
    )
    admin.execute(
        sql.SQL("ALTER ROLE {} " + " ".join(attributes or ("NOCREATEROLE",))).format(
            sql.Identifier(role)
        )
    )


def hosted_roles(admin, dsn: str, installer: str, shop: str) -> tuple[str, str]:
    """An installer that may create in the database, may neither create roles
    nor databases, and is a member of the shop, the owner of the app's tables;
    the admin (the tests' role) a member of both, to clean up after them.
    Returns the installer's dsn and the shop's."""
    for role in (installer, shop):
        create_login(admin, role)
        admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
    database = conninfo_to_dict(dsn)["dbname"]
    admin.execute(
        sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(database), sql.Identifier(installer)
        )
    )
    admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(shop)))
    admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(shop), sql.Identifier(installer)))
    return make_conninfo(dsn, user=installer), make_conninfo(dsn, user=shop)


@pytest.fixture
def hosted(empty_dsn):
    """(admin connection, installer's dsn, shop's dsn): hosted_roles' installer
    and shop."""
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        for attachment in ("seed", "esports"):  # left by earlier tests in a reused database
            left = api.sync_role_name(admin, attachment)
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(left)))
        yield admin, *hosted_roles(admin, empty_dsn, INSTALLER, SHOP)


def installer_dsn_of(conn) -> str:
    return make_conninfo(conn.info.dsn, password=conn.info.password)


def refused_unless_a_superuser_made_it(admin, installer, attachment, django=False) -> None:
    """On 16+ a non-superuser administrator (a managed server's: the tests' own
    role there) keeps ADMIN OPTION on the sync role it made, and could act as
    it: attach refuses the role; the test ends there (said in its summary)."""
    superuser = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    if admin.info.server_version < 160000 or admin.execute(superuser).fetchone()[0]:
        return
    role = api.sync_role_name(installer, attachment)
    if django:
        said_in_one_line(manage(installer_dsn_of(installer), "migrate"), "not a bare sync role")
    else:
        with pytest.raises(errors.DuplicateObject, match="not a bare sync role"):
            installer.execute(SEED_ATTACH.replace("'seed'", f"'{attachment}'"))
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    pytest.skip("on PostgreSQL 16+ only a superuser may make an attachment's role for another")


def test_the_recipe_lets_an_installer_without_createrole_install_attach_and_detach(hosted):
    admin, installer_dsn, shop_dsn = hosted
    if admin.execute("SELECT to_regrole('economy_app')").fetchone()[0]:
        # as a new installer would be: the roles exist, it has no right on them
        admin.execute(
            sql.SQL("REVOKE economy_app FROM {} CASCADE").format(sql.Identifier(INSTALLER))
        )
    refused = run("migrate", dsn=installer_dsn)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "economy-sync roles --sql" in refused.stderr
    recipe = run("roles", "--sql", dsn=installer_dsn)
    assert recipe.returncode == 0, recipe.stderr
    admin.execute(recipe.stdout)
    admin.execute(recipe.stdout)  # safe to run again
    assert run("migrate", dsn=installer_dsn).returncode == 0

    with psycopg.connect(installer_dsn, autocommit=True) as installer:
        with psycopg.connect(shop_dsn, autocommit=True) as shop:
            shop.execute(SEED_TABLES)
            shop.execute("INSERT INTO app_profile DEFAULT VALUES")
            shop.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")
        with pytest.raises(errors.InsufficientPrivilege):  # its role cannot be made
            installer.execute(SEED_ATTACH)
        recipe = run("roles", "--sql", "--attachment", "seed", dsn=installer_dsn)
        assert recipe.returncode == 0, recipe.stderr
        admin.execute(recipe.stdout)
        refused_unless_a_superuser_made_it(admin, installer, "seed")
        installer.execute(SEED_ATTACH)
        with psycopg.connect(shop_dsn, autocommit=True) as shop:
            pay(shop, 1, 10)
            assert seed_figures(shop)[0] == {1: (10, 10)}
        assert api.balance_drift(installer, attachment="seed") == []
        for command in ("drift", "doctor"):
            done = run(command, "--attachment", "seed", dsn=installer_dsn)
            assert done.returncode == 0, done.stdout + done.stderr

        # upgrade and downgrade with the attachment present
        migrate.downgrade(installer_dsn, "0011_parked_running_sums")
        migrate.upgrade(installer_dsn)
        with psycopg.connect(shop_dsn, autocommit=True) as shop:
            pay(shop, 1, 5)
            assert seed_figures(shop)[0] == {1: (15, 15)}

        # detach cannot drop the role: it is kept, bare, and attach takes it over again
        role = api.sync_role_name(installer, "seed")
        notices = []
        installer.add_notice_handler(lambda notice: notices.append(notice.message_primary))
        installer.execute("SELECT economy.detach('seed')")
        assert any(f"role {role} kept" in notice for notice in notices), notices
        assert not admin.execute(
            "SELECT EXISTS (SELECT FROM pg_class c WHERE pg_has_role(%s, c.relowner, 'MEMBER')"
            " AND c.relnamespace = 'economy'::regnamespace)"
            " OR has_table_privilege(%s, 'app_wallet', 'UPDATE')",
            [role, role],
        ).fetchone()[0]
        installer.execute(SEED_ATTACH)
        assert api.balance_drift(installer, attachment="seed") == []
        installer.execute("SELECT economy.detach('seed')")
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_an_installer_with_createrole_installs_attaches_and_moves_between_revisions(hosted):
    """(a): CREATEROLE, no CREATEDB. Where the roles exist already, 16+ lets it
    grant only roles it made: the one-line refusal, then the recipe."""
    admin, installer_dsn, shop_dsn = hosted
    admin.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(INSTALLER)))
    done = run("migrate", dsn=installer_dsn)
    if done.returncode != 0:
        assert admin.info.server_version >= 160000, done.stderr
        assert done.stderr.count("\n") == 1 and "economy-sync roles --sql" in done.stderr
        admin.execute(roles.recipe(INSTALLER))
        done = run("migrate", dsn=installer_dsn)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(installer_dsn, autocommit=True) as installer:
        with psycopg.connect(shop_dsn, autocommit=True) as shop:
            shop.execute(SEED_TABLES)
            shop.execute("INSERT INTO app_profile DEFAULT VALUES")
            shop.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")
        installer.execute(SEED_ATTACH)  # makes its sync role itself
        migrate.downgrade(installer_dsn, "0011_parked_running_sums")
        migrate.upgrade(installer_dsn)
        with psycopg.connect(shop_dsn, autocommit=True) as shop:
            pay(shop, 1, 7)
            assert seed_figures(shop)[0] == {1: (7, 7)}
        for command in ("drift", "doctor"):
            done = run(command, "--attachment", "seed", dsn=installer_dsn)
            assert done.returncode == 0, done.stdout + done.stderr
        role = api.sync_role_name(installer, "seed")
        installer.execute("SELECT economy.detach('seed')")
        assert not admin.execute("SELECT to_regrole(%s)", [role]).fetchone()[0]


def test_a_sync_role_with_another_member_is_refused(hosted):
    """A role made beforehand with any member but the installer and superusers,
    even one holding ADMIN OPTION alone (it could grant the role to itself), is
    not taken over; without that member it is."""
    admin, installer_dsn, shop_dsn = hosted
    admin.execute(roles.recipe(INSTALLER))
    migrate.upgrade(installer_dsn)
    with psycopg.connect(installer_dsn, autocommit=True) as installer:
        with psycopg.connect(shop_dsn, autocommit=True) as shop:
            shop.execute(SEED_TABLES)
        role = api.sync_role_name(installer, "seed")
        admin.execute(roles.recipe(INSTALLER, {"seed": role}))
        admin.execute(
            sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(
                sql.Identifier(role), sql.Identifier(SHOP)
            )
        )
        with pytest.raises(errors.DuplicateObject, match="not a bare sync role"):
            installer.execute(SEED_ATTACH)
        admin.execute(
            sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(role), sql.Identifier(SHOP))
        )
        refused_unless_a_superuser_made_it(admin, installer, "seed")
        installer.execute(SEED_ATTACH)
        installer.execute("SELECT economy.detach('seed')")
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_recipe_needs_an_installer_name_or_a_database():
    done = run("roles", "--sql", dsn=None)
    assert done.returncode == 2 and "--installer" in done.stderr
    done = run("roles", "--sql", "--installer", "odd$name", dsn=None)
    assert done.returncode == 2 and "$" in done.stderr


def manage(dsn: str, *args: str) -> subprocess.CompletedProcess:
    """examples/django's manage.py on dsn, as its users run it."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=SOURCE_ROOT / "examples" / "django",
        env={**os.environ, "ECONOMY_SYNC_DJANGO_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=120,
    )


def said_in_one_line(done: subprocess.CompletedProcess, remedy: str) -> None:
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("CommandError: ") and remedy in line, line


def test_django_migrate_as_an_installer_without_createrole(hosted):
    """The example's migrations (install, then attach its models) as (b): one
    line naming the recipe; with it, migrate; back to before the attachment
    (its role kept, bare); removing the package needs a role that may drop
    the package's roles, and says so in one line."""
    admin, installer_dsn, _ = hosted
    if admin.execute("SELECT to_regrole('economy_app')").fetchone()[0]:
        admin.execute(
            sql.SQL("REVOKE economy_app FROM {} CASCADE").format(sql.Identifier(INSTALLER))
        )
    said_in_one_line(manage(installer_dsn, "migrate"), "economy-sync roles --sql")
    recipe = run("roles", "--sql", "--attachment", "esports", dsn=installer_dsn)
    assert recipe.returncode == 0, recipe.stderr
    admin.execute(recipe.stdout)
    with psycopg.connect(installer_dsn, autocommit=True) as installer:
        refused_unless_a_superuser_made_it(admin, installer, "esports", django=True)
    done = manage(installer_dsn, "migrate")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(installer_dsn) as installer:
        assert api.attachments(installer) == ["economy", "esports"]
        role = api.sync_role_name(installer, "esports")
    said_in_one_line(manage(installer_dsn, "migrate", "esports", "0001"), "CREATEROLE")
    with psycopg.connect(installer_dsn, autocommit=True) as installer:  # nothing undone
        assert api.attachments(installer) == ["economy", "esports"]
        installer.execute("SELECT economy.detach('esports')")
        installer.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_recipe_names_the_sync_role_before_the_install_as_attach_will(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        before = api.sync_role_name(conn, "esports")
        migrate.upgrade(empty_dsn)
        assert api.sync_role_name(conn, "esports") == before
