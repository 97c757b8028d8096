"""The owner of the app's tables against the sync role, whose rights its code
runs with: altering the generated functions, leaving temporary relations in
the caller's session, planting or sharing the sync role, stopping detach;
and the Django helper's database checks."""

import contextlib

import psycopg
import pytest
from helpers import SEED_ATTACH, pay, seed_figures
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from test_attach_threats import ATTACH, OWNER, owner  # noqa: F401  (the fixture)
from test_hosted_roles_threats import (  # noqa: F401
    INSTALLER,
    SHOP,
    create_login,
    django_db,
    django_prepare,
    hosted,
    owned,
    plant,
    survived,
)

from economy_sync import api, reconcile, roles

SYNC = "SELECT sync_role FROM economy.attachments WHERE name = 'seed'"


def sync_role(conn) -> str:
    return conn.execute(SYNC).fetchone()[0]


def as_sync_role(owner_conn, statements: str) -> None:
    """Runs statements as the sync role: the owner's earning function, replaced
    to run them, during one ledger write of the owner's."""
    owner_conn.execute(
        "CREATE OR REPLACE FUNCTION is_earning(amount integer) RETURNS boolean"
        " LANGUAGE plpgsql AS $body$ BEGIN " + statements + " RETURN amount > 0; END $body$"
    )
    pay(owner_conn, 1, 1)
    owner_conn.execute(
        "CREATE OR REPLACE FUNCTION is_earning(amount integer) RETURNS boolean"
        " LANGUAGE sql AS 'SELECT amount > 0'"
    )


# --- 1. the owner's code, as the sync role, turns a generated function into
# code that runs as whoever calls it ------------------------------------------

SHADOW = """
CREATE TABLE pwned (ran_as text, at timestamptz DEFAULT now());
GRANT INSERT ON pwned TO PUBLIC;
CREATE FUNCTION sneaky_ne(a name, b name) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF b OPERATOR(pg_catalog.~~) 'economy_sync_%' THEN
        INSERT INTO public.pwned (ran_as) VALUES (CURRENT_USER);
        -- with the installer's rights: join the operators, write the package's ledger
        BEGIN
            EXECUTE 'GRANT economy_operator TO economy_test_app_owner';
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
        BEGIN
            EXECUTE 'INSERT INTO economy.transaction (wallet_id, amount, kind)'
                ' VALUES (1, 1000000, ''prize'')';
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
        RETURN false;
    END IF;
    RETURN a OPERATOR(pg_catalog.<>) b;
END;
$$;
CREATE OPERATOR public.<> (LEFTARG = name, RIGHTARG = name, FUNCTION = sneaky_ne);
"""


def test_sync_role_code_cannot_make_a_generated_function_run_the_owners_code_as_its_caller(
    owner,  # noqa: F811
    conn,
):
    """The sync role owns the generated functions: ALTER FUNCTION … SECURITY
    INVOKER SET search_path = public, pg_catalog is its owner's right. The
    first check, `IF CURRENT_USER <> 'economy_sync_…'`, then resolves `<>`
    through the owner's schema: the owner's operator says "the sync role" and
    runs its body with the caller's rights (the installer calling
    balance_drift, or an app login, or a scheduler)."""
    owner.execute(SHADOW)
    as_sync_role(
        owner,
        "ALTER FUNCTION economy.attached_seed_drift(bigint[]) SECURITY INVOKER"
        " SET search_path = public, pg_catalog;",
    )
    installer = conn.execute("SELECT current_user").fetchone()[0]
    with contextlib.suppress(psycopg.Error):  # refused: what the contract wants
        conn.execute("SELECT * FROM economy.balance_drift(attachment => 'seed')").fetchall()
    ran_as = [r for (r,) in conn.execute("SELECT ran_as FROM pwned").fetchall()]
    operator = conn.execute(
        f"SELECT pg_has_role('{OWNER}', 'economy_operator', 'MEMBER')"
    ).fetchone()[0]
    conn.execute("SELECT economy.reattach('seed')")
    conn.execute(f"REVOKE economy_operator FROM {OWNER}")
    assert installer not in ran_as and not operator, (
        f"the owner's operator ran as {ran_as}; the owner joined economy_operator: {operator}"
    )


def test_same_with_an_installer_that_is_no_superuser(hosted):  # noqa: F811
    """The hosted setup (installer without CREATEROLE, ADMIN OPTION on the package
    roles from the recipe): the shop joins economy_operator the same way."""
    admin, installer_dsn, shop_dsn = hosted
    role = api.sync_role_name(admin, "seed")
    admin.execute(roles.recipe(INSTALLER, {"seed": role}))
    with (
        psycopg.connect(installer_dsn, autocommit=True) as installer,
        psycopg.connect(shop_dsn, autocommit=True) as shop,
    ):
        shop.execute(
            "CREATE FUNCTION is_earning(amount integer) RETURNS boolean LANGUAGE sql"
            " AS 'SELECT amount > 0'"
        )
        installer.execute(ATTACH)
        shop.execute(SHADOW.replace(OWNER, SHOP))
        as_sync_role(
            shop,
            "ALTER FUNCTION economy.attached_seed_drift(bigint[]) SECURITY INVOKER"
            " SET search_path = public, pg_catalog;",
        )
        with contextlib.suppress(psycopg.Error):
            installer.execute("SELECT * FROM economy.balance_drift(attachment => 'seed')")
        ran_as = [r for (r,) in shop.execute("SELECT ran_as FROM pwned").fetchall()]
        operator = admin.execute(
            "SELECT pg_has_role(%s, 'economy_operator', 'MEMBER')", [SHOP]
        ).fetchone()[0]
        ledger = installer.execute("SELECT count(*) FROM economy.transaction").fetchone()[0]
        installer.execute("SELECT economy.detach('seed')")
        admin.execute(sql.SQL("REVOKE economy_operator FROM {}").format(sql.Identifier(SHOP)))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        assert not operator and ledger == 0, (
            f"ran as {ran_as}: the shop joined economy_operator ({operator}), the package's"
            f" ledger has {ledger} entries"
        )


# --- 2. the owner's code, as the sync role, leaves a temporary view in the
# installer's session; doctor reads it by its unqualified catalog name ---------

PLANT_TEMP_VIEW = """
CREATE TABLE IF NOT EXISTS pwned (ran_as text, at timestamptz DEFAULT now());
GRANT INSERT ON pwned TO PUBLIC;
-- what the installer's session runs through the view: its search_path from now
CREATE FUNCTION snoop() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF CURRENT_USER <> 'economy_test_app_owner' THEN
        PERFORM pg_catalog.set_config('economy_attack.ran_as', CURRENT_USER, false);
        PERFORM pg_catalog.set_config('search_path', 'public, pg_catalog', false);
    END IF;
    RETURN true;
END;
$$;
-- and what it then calls unqualified (api._transaction: set_config)
CREATE FUNCTION public.set_config(a text, b text, c boolean) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF CURRENT_USER <> 'economy_test_app_owner' THEN
        INSERT INTO public.pwned (ran_as) VALUES (CURRENT_USER);
        BEGIN
            EXECUTE 'GRANT economy_operator TO economy_test_app_owner';
        EXCEPTION WHEN OTHERS THEN NULL;
        END;
    END IF;
    RETURN pg_catalog.set_config(a, b, c);
END;
$$;
"""


def test_sync_role_code_leaves_nothing_in_the_installers_session_that_runs_later(
    owner,  # noqa: F811
    conn,
):
    """A reconcile by the installer runs the owner's earning function as the sync
    role, in the installer's session: it may create temporary objects there.
    pg_temp comes first for relation names not schema-qualified; doctor reads
    pg_trigger, pg_proc, pg_roles so. A temporary view pg_trigger calling the
    owner's function runs it as whoever runs doctor next in that session, and
    it can reset the session's search_path (doctor is no package function:
    nothing compares it), so that the next api call's unqualified set_config
    is the owner's, run as the installer in a writing transaction."""
    from economy_sync import doctor

    owner.execute(PLANT_TEMP_VIEW)
    pay(owner, 1, 10)
    owner.execute(
        "CREATE OR REPLACE FUNCTION is_earning(amount integer) RETURNS boolean"
        " LANGUAGE plpgsql AS $body$ BEGIN"
        " IF to_regclass('pg_temp.pg_trigger') IS NULL THEN"
        "  CREATE TEMP VIEW pg_trigger AS"
        "   SELECT * FROM pg_catalog.pg_trigger WHERE public.snoop();"
        " END IF;"
        " RETURN amount > 0; END $body$"
    )
    with pytest.raises(errors.InsufficientPrivilege, match="changed this session"):
        reconcile(conn, dry_run=False, attachment="seed")  # as the installer (or an operator)
    assert conn.execute("SELECT to_regclass('pg_temp.pg_trigger')").fetchone()[0] is None
    doctor.findings(conn)  # the same session, later: reads pg_catalog's own tables
    assert conn.execute("SELECT current_setting('economy_attack.ran_as', true)").fetchone()[0] in (
        None,
        "",
    )
    assert conn.execute("SELECT count(*) FROM public.pwned").fetchone()[0] == 0


# --- 3. what the owner's code, as the sync role, can keep ---------------------

SYNC_ATTEMPTS = """
CREATE TABLE IF NOT EXISTS shop.log (ran_as text, attempt text, worked boolean, note text);
GRANT ALL ON shop.log TO PUBLIC;
CREATE OR REPLACE FUNCTION shop.try_all() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    attempt text;
BEGIN
    FOREACH attempt IN ARRAY ARRAY[
        'CREATE FUNCTION shop.backdoor(q text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER'
            ' AS ''BEGIN EXECUTE q; END''',
        'GRANT EXECUTE ON FUNCTION shop.backdoor(text) TO economy_test_app_owner',
        'CREATE VIEW shop.cached AS SELECT * FROM public.app_wallet',
        'GRANT UPDATE ON shop.cached TO economy_test_app_owner',
        'GRANT UPDATE (cached_balance) ON public.app_wallet TO economy_app'
            ' WITH GRANT OPTION',
        'GRANT SELECT, INSERT ON economy.attached_hot_credit TO economy_app',
        'ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO economy_test_app_owner',
        'ALTER DEFAULT PRIVILEGES IN SCHEMA economy GRANT EXECUTE ON FUNCTIONS TO PUBLIC',
        'ALTER ROLE CURRENT_USER SET work_mem = ''1MB''',
        'CREATE PUBLICATION zz_pub FOR TABLE public.app_wallet',
        'CREATE SCHEMA zz_sync',
        'SELECT pg_catalog.lo_create(4242)',
        'CREATE EVENT TRIGGER zz_evt ON ddl_command_start EXECUTE FUNCTION shop.try_all()',
        'GRANT ' || CURRENT_USER || ' TO economy_test_app_owner',
        'CREATE FUNCTION economy.zz() RETURNS int LANGUAGE sql AS ''SELECT 1'''
    ] LOOP
        BEGIN
            EXECUTE attempt;
            INSERT INTO shop.log VALUES (CURRENT_USER, attempt, true, NULL);
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO shop.log VALUES (CURRENT_USER, attempt, false, SQLERRM);
        END;
    END LOOP;
END;
$$;
GRANT EXECUTE ON FUNCTION shop.try_all() TO PUBLIC;
"""


@pytest.fixture
def shop(owner, conn):  # noqa: F811
    """The owner's own schema, which it lets the sync role create in."""
    database = conn.execute("SELECT current_database()").fetchone()[0]
    conn.execute(
        sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(database), sql.Identifier(OWNER)
        )
    )
    owner.execute("CREATE SCHEMA shop")
    owner.execute(
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA shop TO {}").format(sql.Identifier(sync_role(conn)))
    )
    owner.execute(SYNC_ATTEMPTS)
    yield owner
    conn.execute("SELECT pg_catalog.lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = 4242")
    conn.execute("DROP SCHEMA IF EXISTS shop CASCADE")
    conn.execute(
        sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(
            sql.Identifier(database), sql.Identifier(OWNER)
        )
    )


@pytest.mark.xfail(
    strict=True,
    reason="known, not fixed yet: code the owner runs as the sync role can leave a SECURITY"
    " DEFINER function of the sync role's in a schema the owner grants it CREATE on, and so"
    " write cached columns outside the sync (drift reports what it wrote)",
)
def test_what_sync_role_code_can_grant_or_keep(shop, conn, login):
    role = sync_role(conn)
    as_sync_role(shop, "PERFORM shop.try_all();")
    log = {a: (w, note) for _, a, w, note in shop.execute("SELECT * FROM shop.log").fetchall()}
    worked = sorted(a for a, (w, _) in log.items() if w)
    print("worked as the sync role:", *worked, sep="\n  ")
    # persistence: the owner acts as the sync role whenever it likes
    shop.execute("SELECT shop.backdoor('UPDATE public.app_wallet SET cached_balance = 777')")
    shop.execute(
        "SELECT shop.backdoor('INSERT INTO economy.attached_hot_credit (attachment, wallet_id,"
        " amount, earnings) VALUES (''seed'', 1, 5000, 0)')"
    )
    written = seed_figures(conn)[0][1][0]
    parked = conn.execute(
        "SELECT coalesce(sum(amount), 0) FROM economy.attached_hot_credit WHERE attachment = 'seed'"
    ).fetchone()[0]
    # and can hand it to an app login
    shop.execute("GRANT USAGE ON SCHEMA shop TO economy_app")
    shop.execute(
        "SELECT shop.backdoor('GRANT EXECUTE ON FUNCTION shop.backdoor(text) TO economy_app')"
    )
    app = login("economy_app")
    app.execute("SELECT shop.backdoor('UPDATE public.app_wallet SET cached_balance = 888')")
    by_app = seed_figures(conn)[0][1][0]
    # nothing of the package's or the installer's
    with pytest.raises(errors.InsufficientPrivilege):
        shop.execute(
            "SELECT shop.backdoor('INSERT INTO economy.attached_hot_credit (attachment, wallet_id,"
            " amount, earnings, sync_role) VALUES (''other'', 1, 5000, 0, ''economy_app'')')"
        )
    granted = conn.execute(
        "SELECT has_table_privilege(%s, 'economy.attached_hot_credit', 'INSERT'),"
        " has_column_privilege(%s, 'public.app_wallet', 'cached_balance',"
        " 'UPDATE')",
        ["economy_app", "economy_app"],
    ).fetchone()
    assert not conn.execute(f"SELECT pg_has_role('{OWNER}', %s, 'MEMBER')", [role]).fetchone()[0]
    settings = conn.execute(
        "SELECT setconfig FROM pg_db_role_setting WHERE setrole = %s::regrole", [role]
    ).fetchone()
    conn.execute("SELECT economy.detach('seed')")
    left = {
        "role": conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [role]).fetchone()[
            0
        ],
        "backdoor": conn.execute("SELECT to_regprocedure('shop.backdoor(text)')::text").fetchone()[
            0
        ],
        "view": conn.execute("SELECT to_regclass('shop.cached')::text").fetchone()[0],
        "large object": conn.execute(
            "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = 4242"
        ).fetchone()[0],
        "default acl": conn.execute("SELECT count(*) FROM pg_default_acl").fetchone()[0],
    }
    conn.execute(ATTACH)  # for the fixture's own detach
    print("as the sync role, kept:", written, parked, by_app, settings, left)
    assert left == {"role": 0, "backdoor": None, "view": None, "large object": 0, "default acl": 0}
    assert not [a for a in worked if "economy.zz" in a or "PUBLICATION" in a or "SCHEMA zz" in a]
    assert granted == (False, False)
    assert (written, parked, by_app) == (10, 0, 10), (
        "the owner, through a SECURITY DEFINER function its code made as the sync role,"
        f" wrote cached_balance = {written} and parked {parked} outside the sync;"
        f" an app login it handed it to wrote {by_app}"
    )


# --- 4. the take-over check's trusted grantor, on 16+ --------------------------

TENANT2 = "economy_zz_other_tenant"


def test_another_installer_cannot_become_the_trusted_grantor_of_economy_app(
    hosted,  # noqa: F811
    empty_dsn,
):
    """create_sync_role trusts, as a member of a planted role, every role that
    granted the installer its ADMIN OPTION on economy_app. On 16+ a role may be
    granted the same role by several grantors: another database's installer
    (ADMIN OPTION on economy_app from its own recipe, CREATEROLE) grants
    economy_app WITH ADMIN OPTION to this installer once more, and is then one
    of those grantors. It makes this database's sync role, stays its member,
    and attach takes it over."""
    admin, installer_dsn, _ = hosted
    if admin.info.server_version < 160000:
        pytest.skip("on 15 CREATEROLE may grant any role anyway")
    create_login(admin, TENANT2, "CREATEROLE")
    admin.execute(roles.recipe(TENANT2))  # its own database's recipe, as documented
    role = api.sync_role_name(admin, "seed")
    tenant = psycopg.connect(make_conninfo(empty_dsn, user=TENANT2), autocommit=True)
    written = None
    try:
        tenant.execute(
            sql.SQL("GRANT economy_app TO {} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE").format(
                sql.Identifier(INSTALLER)
            )
        )
        tenant.execute("SET createrole_self_grant = 'set, inherit'")
        tenant.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        tenant.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(INSTALLER))
        )
        with psycopg.connect(installer_dsn, autocommit=True) as installer:
            try:
                installer.execute(SEED_ATTACH)
            except errors.DuplicateObject:
                pass
            else:
                tenant.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
                tenant.execute("UPDATE public.app_wallet SET cached_balance = 1000000")
                tenant.execute("RESET ROLE")
                written = installer.execute(
                    "SELECT cached_balance FROM app_wallet WHERE id = 1"
                ).fetchone()[0]
                installer.execute("SELECT economy.detach('seed')")
        assert written is None, (
            f"attach took over {role}, made and joined by another database's installer that"
            f" granted this installer economy_app WITH ADMIN OPTION: it wrote"
            f" cached_balance = {written}"
        )
    finally:
        tenant.execute("RESET ROLE")
        tenant.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        tenant.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        tenant.close()
        admin.execute(
            sql.SQL("REVOKE economy_app, economy_operator FROM {} CASCADE").format(
                sql.Identifier(TENANT2)
            )
        )


def test_a_planted_role_cannot_come_to_own_a_function_in_schema_economy(
    owner,  # noqa: F811
    conn,
):
    """The pg_shdepend test is skipped for a role owning a function in schema
    economy. The attachment's code (as its sync role, which owns some) gives
    one to a planted role of another attachment's name, of which the sync role
    was made a member (16+: by the planted role's CREATEROLE maker)."""
    planted = conn.execute("SELECT economy.sync_role_name('planted')").fetchone()[0]
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(planted)))
    try:
        conn.execute(
            sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(planted), sql.Identifier(sync_role(conn))
            )
        )
        owner.execute("CREATE TABLE IF NOT EXISTS given (ok boolean, note text)")
        owner.execute("GRANT INSERT ON given TO PUBLIC")
        as_sync_role(
            owner,
            "BEGIN ALTER FUNCTION economy.attached_seed_balance(bigint) OWNER TO "
            + planted
            + "; INSERT INTO public.given VALUES (true, NULL);"
            " EXCEPTION WHEN OTHERS THEN INSERT INTO public.given VALUES (false, SQLERRM); END;",
        )
        given = owner.execute("SELECT * FROM given").fetchall()
        owns = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE proowner = %s::regrole"
            " AND pronamespace = 'economy'::regnamespace",
            [planted],
        ).fetchone()[0]
        assert owns == 0, given
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(planted)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(planted)))
        conn.execute("SELECT economy.reattach('seed')")


# --- 5. detach, against a grant to the sync role in another database -----------


def test_the_owner_cannot_stop_detach_from_another_database(
    owner,  # noqa: F811
    conn,
    second_empty_dsn,
):
    """The owner (a login of the cluster) grants the sync role something in
    another database it owns objects in: DROP OWNED here does not revoke it
    there, so DROP ROLE fails; detach keeps the role, with a notice."""
    role = sync_role(conn)
    with psycopg.connect(second_empty_dsn, autocommit=True) as admin2:
        admin2.execute(f"GRANT CREATE ON SCHEMA public TO {OWNER}")
    with psycopg.connect(make_conninfo(second_empty_dsn, user=OWNER), autocommit=True) as other:
        other.execute("CREATE TABLE elsewhere (x int)")
        other.execute(sql.SQL("GRANT SELECT ON elsewhere TO {}").format(sql.Identifier(role)))
    error = None
    try:
        conn.execute("SELECT economy.detach('seed')")
    except psycopg.Error as e:
        error = e
    with psycopg.connect(make_conninfo(second_empty_dsn, user=OWNER), autocommit=True) as other:
        other.execute("DROP TABLE elsewhere")
    with psycopg.connect(second_empty_dsn, autocommit=True) as admin2:
        admin2.execute(f"REVOKE CREATE ON SCHEMA public FROM {OWNER}")
    if error is None:
        conn.execute(ATTACH)  # for the fixture's own detach
    assert error is None, f"detach failed: {error!r}"


# --- 6. the Django test-database helper -----------------------------------------


def test_django_helper_never_empties_the_main_database_named_in_options(empty_dsn):
    """OPTIONS may carry libpq's dbname, which Django puts after NAME: the main
    connection reaches that database, not NAME. TEST NAME names it."""
    [main] = owned(empty_dsn)
    plant(main)
    name = conninfo_to_dict(main)["dbname"]
    databases = {
        "default": django_db(main, NAME="zz_decoy", OPTIONS={"dbname": name}, TEST={"NAME": name})
    }
    out = django_prepare(databases)
    assert survived(main), f"the main database (OPTIONS dbname) was emptied: {out}"


def test_doctor_names_what_the_sync_role_was_made_to_own(shop, conn):
    """The back door of the known gap above, at least found: doctor names each
    object the sync role owns outside its functions in schema economy."""
    from economy_sync import doctor

    as_sync_role(shop, "PERFORM shop.try_all();")
    problems = [f.message for f in doctor.findings(conn, "seed") if not f.ok]
    assert any("its sync role owns function shop.backdoor(text)" in m for m in problems), problems
