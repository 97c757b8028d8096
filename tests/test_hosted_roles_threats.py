"""Hosted roles, attacked: taking over a sync role made beforehand, the detach
keep path, the roles recipe, the Django test-database helper, each as the role
that would gain (an app login with CREATEROLE, another database's installer,
a name with a newline, a test database that is the main one by another name)."""

import json
import os
import subprocess
import sys

import psycopg
import pytest
from helpers import SEED_ATTACH, SEED_TABLES, run
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from test_hosted_roles import create_login, hosted_roles

from economy_sync import api, migrate, roles

SHOP = "economy_threat_shop"
INSTALLER = "economy_threat_installer"


# --- the roles recipe ------------------------------------------------------


def test_recipe_attachment_name_cannot_inject_sql_into_the_admins_session(empty_dsn):
    """The recipe interpolates the attachment name (a Literal) into a `--`
    comment: a newline in it ends the comment and the rest runs as the
    administrator who runs the recipe (superuser, or CREATEROLE)."""
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        create_login(admin, SHOP)
        create_login(admin, INSTALLER)
        migrate.upgrade(empty_dsn)
        admin.execute(sql.SQL("REVOKE economy_operator FROM {}").format(sql.Identifier(SHOP)))
        name = f"x\nGRANT economy_operator TO {SHOP}; --"
        recipe = run(
            "roles", "--sql", "--installer", INSTALLER, "--attachment", name, dsn=empty_dsn
        )
        if recipe.returncode == 0:
            admin.execute(recipe.stdout)
        gained = admin.execute(
            "SELECT pg_has_role(%s, 'economy_operator', 'MEMBER')", [SHOP]
        ).fetchone()[0]
        admin.execute(sql.SQL("REVOKE economy_operator FROM {}").format(sql.Identifier(SHOP)))
        role = api.sync_role_name(admin, name)
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        assert not gained, "the attachment name's newline ran SQL as the administrator"


def test_recipe_installer_name_cannot_inject_sql(empty_dsn, tmp_path):
    """The installer's name (an Identifier) lands in a `--` comment too: run as
    the README has it (`psql -f roles.sql`, statement by statement), the line
    after the newline runs as the administrator."""
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        create_login(admin, SHOP)
        migrate.upgrade(empty_dsn)
        admin.execute(sql.SQL("REVOKE economy_operator FROM {}").format(sql.Identifier(SHOP)))
        recipe = run(
            "roles", "--sql", "--installer", f"i\nGRANT economy_operator TO {SHOP};--", dsn=None
        )
        if recipe.returncode == 0:
            script = tmp_path / "roles.sql"
            script.write_text(recipe.stdout)
            subprocess.run(["psql", "-X", "-q", "-f", str(script), empty_dsn], capture_output=True)
        gained = admin.execute(
            "SELECT pg_has_role(%s, 'economy_operator', 'MEMBER')", [SHOP]
        ).fetchone()[0]
        admin.execute(sql.SQL("REVOKE economy_operator FROM {}").format(sql.Identifier(SHOP)))
        assert not gained, "the installer name's newline ran SQL as the administrator"


# --- the Django test-database helper ----------------------------------------

DJANGO_PREPARE = """
import json, os, sys
import django
from django.conf import settings
settings.configure(DATABASES=json.loads(os.environ["ZZ_DATABASES"]), INSTALLED_APPS=[])
django.setup()
from economy_sync.django.testing import prepare
try:
    print(json.dumps(sorted(prepare())))
except Exception as error:
    print(type(error).__name__, error)
"""


def django_prepare(databases: dict, **env) -> str:
    done = subprocess.run(
        [sys.executable, "-c", DJANGO_PREPARE],
        env={**os.environ, "ZZ_DATABASES": json.dumps(databases), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def django_db(dsn: str, **extra) -> dict:
    info = conninfo_to_dict(dsn)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": info["dbname"],
        "USER": info.get("user", ""),
        "HOST": info.get("host", ""),
        "PORT": info.get("port", ""),
        **extra,
    }


DJANGO_ROLE = "economy_threat_django"


def owned(*dsns: str) -> list[str]:
    """The databases given to a plain login (as a hosted role owns its own);
    returns the dsns as that login (on a managed server, the tests' own role,
    which owns them already and may not give them away)."""
    with psycopg.connect(dsns[0], autocommit=True) as admin:
        if not admin.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()[0]:
            return list(dsns)
        create_login(admin, DJANGO_ROLE)
        for dsn in dsns:
            admin.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(conninfo_to_dict(dsn)["dbname"]), sql.Identifier(DJANGO_ROLE)
                )
            )
    return [make_conninfo(dsn, user=DJANGO_ROLE) for dsn in dsns]


def plant(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.precious (x int)")


def survived(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regclass('public.precious') IS NOT NULL").fetchone()[0]


def test_django_helper_never_empties_another_aliass_main_database(
    empty_dsn, second_empty_dsn, request
):
    """Two aliases; the second's TEST NAME is the first's main database (or
    its default test_<NAME> is): the guard compares with its own alias only."""
    main_a, main_b = owned(empty_dsn, second_empty_dsn)
    plant(main_a)
    test_b = conninfo_to_dict(main_a)["dbname"]
    databases = {
        "default": django_db(main_a, TEST={"NAME": conninfo_to_dict(main_b)["dbname"]}),
        "analytics": django_db(main_b, TEST={"NAME": test_b}),
    }
    # default's test database is analytics' main one, and the reverse: both mains
    out = django_prepare(databases)
    assert survived(main_a), f"default's main database was emptied: {out}"


def test_django_helper_never_empties_the_main_database_named_by_a_service(empty_dsn, tmp_path):
    """NAME left empty, the database named by a libpq service (Django's
    OPTIONS service): the main database is reached by another name than NAME.
    Holds, by accident: Django's _nodb_cursor pops `service` from the shared
    OPTIONS, so connection_dsn() raises ImproperlyConfigured before emptying."""
    [main] = owned(empty_dsn)
    info = conninfo_to_dict(main)
    plant(main)
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[shop]\ndbname={info['dbname']}\n")
    databases = {
        "default": django_db(
            main, NAME="", OPTIONS={"service": "shop"}, TEST={"NAME": info["dbname"]}
        )
    }
    out = django_prepare(databases, PGSERVICEFILE=str(services))
    assert survived(main), f"the main database (service shop) was emptied: {out}"


def test_django_helper_leaves_a_mirror_alias_alone(empty_dsn, second_empty_dsn):
    """A replica alias with TEST MIRROR has no test database of its own (Django
    points it at its primary's): the helper should not ask for one."""
    main, test = owned(empty_dsn, second_empty_dsn)
    databases = {
        "default": django_db(main, TEST={"NAME": conninfo_to_dict(test)["dbname"]}),
        "replica": django_db(main, TEST={"MIRROR": "default"}),
    }
    out = django_prepare(databases)
    assert "ImproperlyConfigured" not in out and "Error" not in out, out


# --- the sync role's take-over ----------------------------------------------

ATTACKER = "economy_threat_attacker"


@pytest.fixture
def hosted(empty_dsn):
    """(admin, installer's dsn, shop's dsn): as tests/test_hosted_roles.py's
    fixture: an installer without CREATEROLE, a member of the shop (owner of
    the app's tables); the package installed through the recipe."""
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        installer_dsn, shop_dsn = hosted_roles(admin, empty_dsn, INSTALLER, SHOP)
        admin.execute(roles.recipe(INSTALLER))
        migrate.upgrade(installer_dsn)
        with psycopg.connect(shop_dsn, autocommit=True) as shop:
            shop.execute(SEED_TABLES)
            shop.execute("INSERT INTO app_profile DEFAULT VALUES")
            shop.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")
        yield admin, installer_dsn, shop_dsn


def plant_through_a_dropped_intermediate(attacker, role: str, schema: str) -> None:
    """PostgreSQL 16+: a CREATEROLE login creates the sync role's name through a
    throwaway role X, gives it a SECURITY DEFINER function, and drops X: the
    role is left NOLOGIN, a member of nothing, with no member at all."""
    attacker.execute("SET createrole_self_grant = 'set, inherit'")
    attacker.execute("CREATE ROLE economy_threat_x CREATEROLE")
    attacker.execute("SET ROLE economy_threat_x")
    attacker.execute("SET createrole_self_grant = 'set, inherit'")
    attacker.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    attacker.execute("RESET ROLE")
    attacker.execute(
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(
            sql.Identifier(schema), sql.Identifier(role)
        )
    )
    attacker.execute("SET ROLE economy_threat_x")
    attacker.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    attacker.execute(
        sql.SQL(
            "CREATE FUNCTION {}.backdoor(q text) RETURNS void LANGUAGE plpgsql"
            " SECURITY DEFINER AS $$ BEGIN EXECUTE q; END $$"
        ).format(sql.Identifier(schema))
    )
    attacker.execute("RESET ROLE")
    attacker.execute(
        sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(
            sql.Identifier(schema), sql.Identifier(role)
        )
    )
    attacker.execute("DROP ROLE economy_threat_x")


def test_a_planted_sync_role_that_owns_a_backdoor_is_not_taken_over(hosted, empty_dsn):
    """An app login (economy_app, CREATEROLE as some hosted services give every
    role, a schema of its own) on 16+ plants the sync role's name. The
    administrator (a superuser) runs the recipe: its CREATE ROLE is skipped,
    its GRANT works; attach finds the role "bare" (nothing looks at what it
    owns) and gives it the cached columns. The login then writes them."""
    admin, installer_dsn, _ = hosted
    if admin.info.server_version < 160000:
        pytest.skip("on 15 CREATEROLE may grant any role anyway")
    create_login(admin, ATTACKER, "CREATEROLE")
    admin.execute(sql.SQL("GRANT economy_app TO {}").format(sql.Identifier(ATTACKER)))
    admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(ATTACKER)))
    admin.execute(
        sql.SQL("CREATE SCHEMA IF NOT EXISTS threat_svc AUTHORIZATION {}").format(
            sql.Identifier(ATTACKER)
        )
    )
    role = api.sync_role_name(admin, "planted")
    attacker = psycopg.connect(make_conninfo(empty_dsn, user=ATTACKER), autocommit=True)
    try:
        plant_through_a_dropped_intermediate(attacker, role, "threat_svc")
        with pytest.raises(errors.DuplicateObject):  # it makes the role, never takes one found
            admin.execute(roles.recipe(INSTALLER, {"seed": role}))
        taken_over = False
        with psycopg.connect(installer_dsn, autocommit=True) as installer:
            try:
                installer.execute(SEED_ATTACH.replace("'seed'", "'planted'"))
                taken_over = True
            except (errors.DuplicateObject, errors.InsufficientPrivilege):
                pass
            if taken_over:
                attacker.execute(
                    "SELECT threat_svc.backdoor('UPDATE public.app_wallet"
                    " SET cached_balance = 1000000')"
                )
                attacker.execute(
                    "SELECT threat_svc.backdoor('INSERT INTO economy.attached_hot_credit"
                    " (attachment, wallet_id, amount, earnings) VALUES (''planted'', 1, 5000, 0)')"
                )
                written = installer.execute(
                    "SELECT cached_balance FROM app_wallet WHERE id = 1"
                ).fetchone()[0]
                parked = installer.execute(
                    "SELECT coalesce(sum(amount), 0) FROM economy.attached_hot_credit"
                ).fetchone()[0]
                installer.execute("SELECT economy.detach('planted')")
        assert not taken_over, (
            f"attach took over {role}, which owns threat_svc.backdoor: the app login wrote"
            f" cached_balance = {written} and parked {parked} for the attachment"
        )
    finally:
        attacker.close()
        admin.execute("DROP SCHEMA IF EXISTS threat_svc CASCADE")
        admin.execute("DROP ROLE IF EXISTS economy_threat_x")
        try:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        except errors.InsufficientPrivilege:
            # a managed server's role: nobody administers it; it owns nothing now
            # (its own attachment name, so that no other test meets it)
            pass


TENANT = "economy_threat_other_tenant"


def test_another_databases_installer_is_not_an_administrator_of_this_sync_role(hosted, empty_dsn):
    """Every installer the recipe served holds ADMIN OPTION on economy_app (as does,
    on 16+, the CREATEROLE installer that made the roles first, in any
    database of the cluster): the take-over counts it as an administrator of
    the package's roles. Another tenant's installer with CREATEROLE (16+)
    makes this database's sync role before the attach, grants it to this
    installer (so no GRANT is needed, no recipe for the attachment either) and
    stays its member; attach takes it over, and the other tenant writes this
    database's cached columns as the sync role."""
    admin, installer_dsn, _ = hosted
    if admin.info.server_version < 160000:
        pytest.skip("on 15 CREATEROLE may grant any role anyway")
    create_login(admin, TENANT, "CREATEROLE")
    admin.execute(roles.recipe(TENANT))  # its own database's recipe, as documented
    role = api.sync_role_name(admin, "seed")
    tenant = psycopg.connect(make_conninfo(empty_dsn, user=TENANT), autocommit=True)
    try:
        tenant.execute("SET createrole_self_grant = 'set, inherit'")
        tenant.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        tenant.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(INSTALLER))
        )
        taken_over = False
        with psycopg.connect(installer_dsn, autocommit=True) as installer:
            try:
                installer.execute(SEED_ATTACH)
                taken_over = True
            except errors.DuplicateObject:
                pass
            if taken_over:
                tenant.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
                tenant.execute("UPDATE public.app_wallet SET cached_balance = 1000000")
                tenant.execute("RESET ROLE")
                written = installer.execute(
                    "SELECT cached_balance FROM app_wallet WHERE id = 1"
                ).fetchone()[0]
                installer.execute("SELECT economy.detach('seed')")
        assert not taken_over, (
            f"attach took over {role}, made and joined by another database's installer:"
            f" it wrote cached_balance = {written}"
        )
    finally:
        tenant.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        tenant.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        tenant.close()
        admin.execute(
            sql.SQL("REVOKE economy_app, economy_operator FROM {} CASCADE").format(
                sql.Identifier(TENANT)
            )
        )


def test_django_helper_never_empties_the_main_database_by_a_longer_name(empty_dsn):
    """PostgreSQL cuts a database name to 63 bytes, in a connection's startup
    packet and in `datname = $1`: a TEST NAME of the main's 63-byte NAME plus
    `_test` is another string but the same database. Refused by its length.
    (A managed server's role may not create the 63-byte database: there the
    main database is the one it has.)"""
    [owner_dsn] = owned(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as admin:
        may_create = admin.execute(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()[0]
        main_name = f"threat_{os.getpid()}_".ljust(63, "m")
        if may_create:
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(main_name), sql.Identifier(conninfo_to_dict(owner_dsn)["user"])
                )
            )
        else:
            main_name = conninfo_to_dict(owner_dsn)["dbname"]
    main = make_conninfo(owner_dsn, dbname=main_name)
    try:
        plant(main)
        test_name = main_name + "_test" if may_create else main_name.ljust(64, "_")
        out = django_prepare({"default": django_db(main, TEST={"NAME": test_name})})
        assert survived(main), f"the main database was emptied: {out}"
        assert "longer than 63 bytes" in out, out
    finally:
        if may_create:
            with psycopg.connect(empty_dsn, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(main_name)))


def test_django_helper_works_for_the_bootstrap_superuser(empty_dsn, second_empty_dsn):
    """EMPTY drops every schema the role owns: for the bootstrap superuser (a
    local `postgres`, the tests' own role) that is pg_catalog, pg_toast and
    information_schema."""
    test = conninfo_to_dict(second_empty_dsn)["dbname"]
    out = django_prepare({"default": django_db(empty_dsn, TEST={"NAME": test})})
    assert out.startswith("["), out


def test_the_pytest_plugin_keeps_pytest_djangos_per_worker_test_databases(
    empty_dsn, second_empty_dsn, tmp_path
):
    """pytest-django gives each parallel run its own test database (xdist's
    gw0, tox's TOX_PARALLEL_ENV suffix) through django_db_modify_db_settings,
    which its django_db_setup requests; the plugin's replacement does not: every
    parallel run empties, then migrates, the one unsuffixed test database
    while the others run their tests on it."""
    main, test = owned(empty_dsn, second_empty_dsn)
    plant(test)
    project = tmp_path / "project"
    project.mkdir()
    databases = {"default": django_db(main, TEST={"NAME": conninfo_to_dict(test)["dbname"]})}
    (project / "threat_settings.py").write_text(
        f"DATABASES = {databases!r}\nINSTALLED_APPS = []\nUSE_TZ = True\nSECRET_KEY = 'x'\n"
    )
    (project / "conftest.py").write_text(
        "from economy_sync.django.pytest_plugin import django_db_setup  # noqa: F401\n"
    )
    (project / "test_one.py").write_text("def test_one(db):\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_one.py"],
        cwd=project,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "threat_settings",
            "PYTHONPATH": str(project),
            "TOX_PARALLEL_ENV": "py1",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert survived(test), (
        "a parallel tox env (test database name + _py1) emptied the shared test database: "
        + done.stdout[-800:]
    )
