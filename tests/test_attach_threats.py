"""Who may do what on attached tables, tested as the role an attacker would have.

Installer (here the test's superuser) > the owner of the app's tables (a plain
login) > app logins. The owner supplies code that the sync runs: a function its
`earning` expression calls, replaced after attach, and its own trigger on its
wallet table. Each tries to escalate (join economy_operator, write the package's
ledger, another attachment's parked credits, the catalogue) and logs who it ran
as and what worked. None of it may run as the installer or succeed."""

import psycopg
import pytest
from helpers import SEED_TABLES, pay, run, seed_figures
from psycopg import errors
from psycopg.conninfo import make_conninfo

from economy_sync import recompute_lifetime_earnings, reconcile

OWNER = "economy_test_app_owner"

# Each attempt runs in its own block: a refusal is logged, not raised.
ATTEMPTS = """
CREATE TABLE attack_log (ran_as text, attempt text, worked boolean);
GRANT INSERT ON attack_log TO PUBLIC;
CREATE FUNCTION attack() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    attempt text;
BEGIN
    FOREACH attempt IN ARRAY ARRAY[
        'GRANT economy_operator TO economy_test_app_owner',
        'INSERT INTO economy.transaction (wallet_id, amount, kind) VALUES (1, 1000, ''prize'')',
        'INSERT INTO economy.attached_hot_credit VALUES (''other'', 1, 1000, 0)',
        'UPDATE economy.attachments SET earning = ''true''',
        'CREATE FUNCTION economy.planted() RETURNS int LANGUAGE sql AS ''SELECT 1'''
    ] LOOP
        BEGIN
            EXECUTE attempt;
            INSERT INTO public.attack_log VALUES (current_user, attempt, true);
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO public.attack_log VALUES (current_user, attempt, false);
        END;
    END LOOP;
END;
$$;
GRANT EXECUTE ON FUNCTION attack() TO PUBLIC;
CREATE FUNCTION is_earning(amount integer) RETURNS boolean LANGUAGE sql AS 'SELECT amount > 0';
"""
ATTACH = """
SELECT economy.attach(
    'seed', 'app_transaction', 'app_wallet',
    wallet_balance_column => 'cached_balance', wallet_earnings_column => 'lifetime_earnings',
    wallet_owner_column => 'profile_id', profile => 'app_profile',
    profile_balance_column => 'deltacoin_balance', profile_earnings_column => 'lifetime_earnings',
    earning => 'public.is_earning(amount)')
"""
# after attach, the owner's code turns hostile
HOSTILE = """
CREATE OR REPLACE FUNCTION is_earning(amount integer) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.attack();
    RETURN amount > 0;
END;
$$;
CREATE FUNCTION wallet_touched() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.attack();
    RETURN NULL;
END;
$$;
CREATE TRIGGER wallet_touched AFTER UPDATE ON app_wallet
FOR EACH ROW EXECUTE FUNCTION wallet_touched();
"""


@pytest.fixture
def owner(conn, dsn):
    """The owner of the app's tables: a login of its own, no package role, its
    tables attached by the installer (a member of it, as the README says)."""
    conn.execute(f"DROP ROLE IF EXISTS {OWNER}")  # the module's constant
    conn.execute(f"CREATE ROLE {OWNER} LOGIN")
    conn.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {OWNER}")
    conn.execute(f"GRANT {OWNER} TO current_user")
    economy_wallet = conn.execute("SELECT economy.open_wallet(1)").fetchone()[0]
    assert economy_wallet == 1
    own = psycopg.connect(make_conninfo(dsn, user=OWNER), autocommit=True)
    own.execute(SEED_TABLES)
    own.execute(ATTEMPTS)
    own.execute("INSERT INTO app_profile DEFAULT VALUES")
    own.execute("INSERT INTO app_wallet (profile_id) VALUES (1), (NULL)")
    conn.execute(ATTACH)
    own.execute(HOSTILE)
    yield own
    own.close()
    conn.execute("SELECT economy.detach('seed')")
    conn.execute("DROP OWNED BY " + OWNER)
    conn.execute("DROP ROLE " + OWNER)


def log(conn):
    return conn.execute("SELECT ran_as, attempt, worked FROM attack_log").fetchall()


def assert_nothing_gained(conn):
    entries = log(conn)
    assert entries, "the owner's code did not run"
    installer = conn.execute("SELECT current_user").fetchone()[0]
    assert installer not in {ran_as for ran_as, _, _ in entries}
    assert [attempt for _, attempt, worked in entries if worked] == []
    assert not conn.execute(
        f"SELECT pg_has_role('{OWNER}', 'economy_operator', 'MEMBER')"
    ).fetchone()[0]
    assert conn.execute("SELECT count(*) FROM economy.transaction").fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM economy.attached_hot_credit WHERE attachment = 'other'"
    ).fetchone() == (0,)


def test_the_owners_earning_function_never_runs_as_the_installer(owner, conn):
    pay(owner, 1, 10)  # the sync, as the owner's login
    conn.execute("SELECT * FROM economy.balance_drift(attachment => 'seed')")
    recompute_lifetime_earnings(conn, 1, attachment="seed")
    with conn.transaction():
        conn.execute("ALTER TABLE app_wallet DISABLE TRIGGER USER")
        conn.execute("UPDATE app_wallet SET cached_balance = 0")
        conn.execute("ALTER TABLE app_wallet ENABLE TRIGGER USER")
    reconcile(conn, dry_run=False, attachment="seed")
    assert_nothing_gained(conn)
    assert seed_figures(conn)[0][1] == (10, 10)


def test_the_owners_trigger_on_its_wallets_never_runs_as_the_installer(owner, conn):
    pay(owner, 1, 10)
    conn.execute("SELECT economy.set_hot(2, attachment => 'seed')")
    pay(owner, 2, 4)
    conn.execute("SELECT economy.fold_hot_wallets(attachment => 'seed')")  # writes wallet 2
    assert_nothing_gained(conn)


def test_the_owner_cannot_alter_or_replace_the_generated_functions(owner):
    with pytest.raises(errors.InsufficientPrivilege):
        owner.execute("ALTER FUNCTION economy.attached_seed_sync() SECURITY INVOKER")
    with pytest.raises(errors.InsufficientPrivilege):
        owner.execute(
            "CREATE OR REPLACE FUNCTION economy.attached_seed_drift(bigint[]) RETURNS"
            " TABLE (user_id bigint, wallet_id bigint, field text, cached_value numeric,"
            " ledger_value numeric) LANGUAGE sql AS 'SELECT NULL::bigint, NULL::bigint,"
            " NULL, NULL::numeric, NULL::numeric WHERE false'"
        )


def test_a_generated_function_made_security_invoker_refuses_to_run_and_doctor_says_so(
    owner, conn, dsn
):
    """The owner's code, running as the sync role, may alter the functions that
    role owns: it gains nothing (each refuses to run as anyone else, such as
    the installer calling reconcile) and doctor reports it."""
    owner.execute(
        "CREATE OR REPLACE FUNCTION is_earning(amount integer) RETURNS boolean"
        " LANGUAGE plpgsql AS $$ BEGIN"
        " ALTER FUNCTION economy.attached_seed_drift(bigint[]) SECURITY INVOKER;"
        " RETURN amount > 0; END $$"
    )
    pay(owner, 1, 10)
    with pytest.raises(errors.InsufficientPrivilege, match="runs only as its owner"):
        conn.execute("SELECT * FROM economy.balance_drift(attachment => 'seed')")
    doctor = run("doctor", "--attachment", "seed", dsn=dsn)
    assert doctor.returncode == 1
    assert "economy.attached_seed_drift(bigint[]) is altered" in doctor.stdout
    conn.execute("SELECT economy.reattach('seed')")
    assert (
        conn.execute("SELECT * FROM economy.balance_drift(attachment => 'seed')").fetchall() == []
    )


@pytest.mark.parametrize(
    "trick",
    [
        "SET economy.repairing = 'on'",
        # a trigger one level down: the old guard let any trigger through
        "CREATE TEMP TABLE poke (x int);"
        " CREATE FUNCTION pg_temp.poke() RETURNS trigger LANGUAGE plpgsql AS"
        " 'BEGIN UPDATE app_wallet SET cached_balance = 999; RETURN NULL; END';"
        " CREATE TRIGGER poke AFTER INSERT ON poke FOR EACH ROW EXECUTE FUNCTION pg_temp.poke();"
        " INSERT INTO poke VALUES (1)",
    ],
    ids=["setting", "temp_table_trigger"],
)
def test_no_setting_or_trigger_depth_opens_the_cached_columns(owner, trick):
    pay(owner, 1, 10)
    owner.execute(trick)
    owner.execute("UPDATE app_wallet SET cached_balance = 999, lifetime_earnings = 999")
    assert seed_figures(owner)[0] == {1: (10, 10), 2: (0, 0)}


def test_an_app_login_with_update_rights_cannot_write_the_cached_columns(owner, login):
    pay(owner, 1, 10)
    owner.execute("GRANT SELECT, UPDATE ON app_wallet TO economy_app")
    app = login("economy_app")
    app.execute("UPDATE app_wallet SET cached_balance = 999")
    assert seed_figures(owner)[0][1] == (10, 10)


def test_the_sync_role_is_a_bare_role_only_the_installer_is_member_of(owner, conn):
    role = conn.execute("SELECT sync_role FROM economy.attachments WHERE name = 'seed'").fetchone()[
        0
    ]
    assert conn.execute(
        "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls"
        " FROM pg_roles WHERE rolname = %s",
        [role],
    ).fetchone() == (False, False, False, False, False)
    assert conn.execute(
        "SELECT array_agg(m.member::regrole::text) FROM pg_auth_members m"
        " WHERE m.roleid = %s::regrole",
        [role],
    ).fetchone()[0] == [conn.execute("SELECT current_user").fetchone()[0]]
    assert not conn.execute(
        "SELECT has_schema_privilege(%s, 'economy', 'CREATE')", [role]
    ).fetchone()[0]


def test_a_planted_role_of_the_sync_roles_name_is_refused(conn):
    conn.execute(SEED_TABLES)
    role = conn.execute("SELECT economy.sync_role_name('seed')").fetchone()[0]
    conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
    conn.execute(f'CREATE ROLE "{role}_x" LOGIN')  # an attacker's login, a member of it
    conn.execute(f'GRANT "{role}" TO "{role}_x"')
    with pytest.raises(errors.DuplicateObject):
        conn.execute(ATTACH.replace("public.is_earning(amount)", "amount > 0"))
    conn.execute(f'DROP ROLE "{role}_x"')
    conn.execute(f'DROP ROLE "{role}"')


def test_detach_drops_the_sync_role(owner, conn):
    role = conn.execute("SELECT sync_role FROM economy.attachments WHERE name = 'seed'").fetchone()[
        0
    ]
    conn.execute("SELECT economy.detach('seed')")
    assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [role]).fetchone() == (
        0,
    )
    conn.execute(ATTACH)  # for the fixture's own detach


def test_an_app_login_cannot_fire_the_sync_from_a_table_of_its_own(owner, login):
    """A temp table with the generated trigger function: EXECUTE is the
    package's alone, and the function runs only for the attached ledger."""
    pay(owner, 1, 10)
    app = login("economy_app")
    app.execute("CREATE TEMP TABLE t (wallet_id int, amount int, reason varchar(32))")
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute(
            "CREATE TRIGGER t AFTER INSERT ON t FOR EACH ROW"
            " EXECUTE FUNCTION economy.attached_seed_sync()"
        )
    assert seed_figures(owner)[0][1] == (10, 10)


def test_a_sync_function_refuses_to_run_for_another_table(owner, conn):
    """Even made a trigger of another table by a role that may (the installer)."""
    conn.execute("CREATE TABLE decoy (wallet_id int, amount int, reason varchar(32))")
    conn.execute(
        "CREATE TRIGGER decoy AFTER INSERT ON decoy FOR EACH ROW"
        " EXECUTE FUNCTION economy.attached_seed_sync()"
    )
    with pytest.raises(errors.InsufficientPrivilege, match="for a trigger on"):
        conn.execute("INSERT INTO decoy VALUES (1, 1000, 'x')")
    assert seed_figures(owner)[0][1] == (0, 0)
    conn.execute("DROP TABLE decoy")


def test_an_earning_text_that_hides_a_statement_is_refused_unrun(conn, tmp_path):
    """An escape string (E'\\'') once hid a statement separator from the scan,
    and the check ran the statement as the installer."""
    marker = tmp_path / "ran"
    conn.execute(
        "CREATE TABLE d_wallet (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);"
        "CREATE TABLE d_tx (id bigserial PRIMARY KEY, wallet_id int, amount bigint)"
    )
    for earning in (
        f"E'\\'' <> 'a') ; COPY (SELECT 1) TO PROGRAM $$touch {marker}$$ ; SELECT ('a'",
        "amount > 0 OR 'x' = E'\\\\'",
        "amount > 0 OR 'x' = $q$x$q$",
    ):
        with pytest.raises(errors.InvalidParameterValue):
            conn.execute("SELECT economy.attach('d', 'd_tx', 'd_wallet', earning => %s)", [earning])
    assert not marker.exists()


def test_grants_made_by_code_running_as_the_sync_role_are_reported_and_taken_back(
    owner, conn, dsn, login
):
    login("economy_app")
    owner.execute(
        "CREATE OR REPLACE FUNCTION is_earning(amount integer) RETURNS boolean"
        " LANGUAGE plpgsql AS $$ BEGIN"
        " GRANT EXECUTE ON FUNCTION economy.attached_seed_set_hot(bigint, boolean)"
        "  TO economy_test_app_login;"
        " RETURN amount > 0; END $$"
    )
    pay(owner, 1, 10)
    may_set_hot = (
        "SELECT has_function_privilege('economy_test_app_login',"
        " 'economy.attached_seed_set_hot(bigint, boolean)', 'EXECUTE')"
    )
    assert conn.execute(may_set_hot).fetchone() == (True,)
    owner.execute(
        "CREATE OR REPLACE FUNCTION is_earning(amount integer) RETURNS boolean"
        " LANGUAGE sql AS 'SELECT amount > 0'"
    )
    doctor = run("doctor", "--attachment", "seed", dsn=dsn)
    assert doctor.returncode == 1
    assert "may be run by economy_test_app_login" in doctor.stdout
    conn.execute("SELECT economy.reattach('seed')")
    assert conn.execute(may_set_hot).fetchone() == (False,)


def test_settings_changed_by_code_run_for_an_attachment_do_not_outlive_it(owner, conn):
    """A session-wide set_config in the owner's earning function would outlive the
    sync role's function and steer what the caller runs next (a search_path that
    puts the owner's functions first): the package refuses, the change is undone."""
    owner.execute(
        "CREATE OR REPLACE FUNCTION is_earning(amount integer) RETURNS boolean"
        " LANGUAGE plpgsql AS $$ BEGIN"
        " PERFORM pg_catalog.set_config('search_path', 'public, pg_catalog', false);"
        " RETURN amount > 0; END $$"
    )
    pay(owner, 1, 10)  # an entry for the drift check to read (and the function to run)
    before = conn.execute("SHOW search_path").fetchone()
    with pytest.raises(errors.InsufficientPrivilege, match="changed this session's settings"):
        conn.execute("SELECT * FROM economy.balance_drift(attachment => 'seed')")
    assert conn.execute("SHOW search_path").fetchone() == before
    with pytest.raises(errors.InsufficientPrivilege):
        recompute_lifetime_earnings(conn, 1, attachment="seed")
    assert conn.execute("SHOW search_path").fetchone() == before


def test_a_dollar_sign_in_a_mapped_name_is_refused(conn):
    conn.execute(
        'CREATE TABLE w ("bal$" integer NOT NULL DEFAULT 0, id integer PRIMARY KEY);'
        "CREATE TABLE l (id bigserial PRIMARY KEY, wallet_id integer, amount integer)"
    )
    with pytest.raises(errors.InvalidName):
        conn.execute("SELECT economy.attach('d', 'l', 'w', wallet_balance_column => 'bal$')")
