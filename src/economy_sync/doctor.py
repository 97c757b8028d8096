"""`economy-sync doctor`: checks an installation, read-only, and says for each
problem what to do. Needs no write privilege and no CREATEDB: it only reads
the catalogs and calls economy.balance_drift()."""

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import psycopg
from rich.console import Console
from rich.markup import escape

from economy_sync import api, migrate
from economy_sync.errors import first_line

SYNC_TRIGGERS = (
    "apply_entry",
    "apply_entries",
    "apply_hot_credit",
    "reverse_transfer_leg",
    "refuse_ledger_change",
)
ROLES = ("economy_app", "economy_operator")
APP_FUNCTIONS = (
    "economy.open_wallet(bigint, numeric)",
    "economy.post_transaction(bigint, numeric, text, text, text, jsonb)",
    "economy.transfer(bigint, bigint, numeric, text, text, jsonb)",
    "economy.transfer_many(bigint[], bigint[], numeric[], text, text, jsonb)",
    "economy.reverse_transaction(bigint, text)",
    "economy.balance_drift(bigint[], text)",
)
RECONCILE = "economy.reconcile_economy(boolean, bigint[], integer, uuid, text)"
REPAIR = "economy.repair_economy(bigint[], integer, uuid, text)"  # a real reconcile
CACHE_TABLES = ("economy.wallet", "economy.profile")
# ledger columns only the database (or economy.transfer and transfer_many) may set
DATABASE_COLUMNS = ("id", "created_at", "transfer_debit_id")
LEDGER = "economy.transaction"


@dataclass(frozen=True)
class Finding:
    ok: bool
    message: str


def one(conn: psycopg.Connection, query: str, params=None):
    return conn.execute(query, params).fetchone()[0]


def schema_revision(conn: psycopg.Connection) -> str | None:
    """The revision named in the schema's comment (readable with USAGE alone)."""
    comment = one(conn, "SELECT obj_description('economy'::regnamespace, 'pg_namespace')")
    found = re.search(r"\(revision (\S+)\)", comment or "")
    return found.group(1) if found else None


def schema_installed_at(conn: psycopg.Connection) -> str | None:
    """The schema's revision; None when the schema is not there."""
    if not one(conn, "SELECT to_regnamespace('economy') IS NOT NULL"):
        return None
    return schema_revision(conn)


def check_schema(conn) -> Iterator[Finding]:
    if not one(conn, "SELECT to_regnamespace('economy') IS NOT NULL"):
        yield Finding(False, "schema economy is missing: run `economy-sync migrate`")
        return
    head, current = migrate.head_revision(), schema_revision(conn)
    if current == head:
        yield Finding(True, f"schema at the latest migration ({head})")
    else:
        yield Finding(False, f"schema at {current}, latest is {head}: run `economy-sync migrate`")


def expected_triggers(conn, attachment: str | None) -> dict[str, str]:
    """The sync's triggers (name -> table) on the package's ledger or on an
    attachment's tables."""
    if api.own_tables(attachment):
        return dict.fromkeys(SYNC_TRIGGERS, LEDGER) | {"apply_batch": "economy.transaction_batch"}
    # the one list of an attachment's triggers (sql/35_attach.sql)
    return dict(
        conn.execute(
            "SELECT t.trigger_name, t.tbl::text"
            " FROM economy.attached_triggers(economy.attachment(%s)) t",
            [attachment],
        ).fetchall()
    )


def check_triggers(conn, attachment: str | None) -> Iterator[Finding]:
    try:
        expected = expected_triggers(conn, attachment)
    except psycopg.errors.UndefinedObject as error:
        yield Finding(False, f"{first_line(error)}: see `SELECT name FROM economy.attachments`")
        return
    states = dict(
        conn.execute(
            "SELECT tgname, tgenabled FROM pg_catalog.pg_trigger"
            " WHERE tgrelid = ANY(%s::regclass[]) AND NOT tgisinternal",
            [sorted(set(expected.values()))],
        ).fetchall()
    )
    repair = "" if api.own_tables(attachment) else f"--attachment {attachment} "
    for name, table in expected.items():
        state = states.get(name)
        if state is None:
            yield Finding(False, f"trigger {name} is missing: reinstall (`economy-sync migrate`)")
        elif state in ("O", "A"):
            yield Finding(True, f"trigger {name} present and enabled")
        else:
            how = "disabled" if state == "D" else "enabled only for replicas"
            yield Finding(
                False,
                f"trigger {name} is {how}: ALTER TABLE {table} ENABLE TRIGGER {name};"
                f" then run `economy-sync reconcile {repair}--apply --all`",
            )


def check_generated_functions(conn, attachment: str) -> Iterator[Finding]:
    """An attachment's triggers run its own functions, in schema economy, as its
    sync role, callable by no one but the package roles they are granted to.
    The code they run (the app owner's, too) may alter them, never escalate;
    here it shows."""
    altered = conn.execute(
        "SELECT f.signature || ' is altered (no longer the sync role''s'"
        "  || ' SECURITY DEFINER function)'"
        " FROM economy.attached_functions(%(a)s) f"
        " JOIN pg_catalog.pg_proc p ON p.oid = to_regprocedure(f.signature)"
        # the earning function is plain SQL, inlined into the sync, which runs as the sync role
        " WHERE f.function_name <> economy.attached_object(%(a)s, 'earns')"
        " AND (NOT p.prosecdef"
        "  OR NOT 'search_path=pg_catalog, pg_temp' = ANY (coalesce(p.proconfig, '{}')))"
        " UNION ALL"
        " SELECT 'trigger ' || t.trigger_name || ' runs ' || p.oid::regprocedure::text"
        " FROM economy.attached_triggers(economy.attachment(%(a)s)) t"
        " JOIN pg_catalog.pg_trigger g ON g.tgrelid = t.tbl AND g.tgname = t.trigger_name"
        " JOIN pg_catalog.pg_proc p ON p.oid = g.tgfoid"
        " WHERE p.pronamespace <> 'economy'::regnamespace OR p.proowner <>"
        "  (SELECT a.sync_role FROM economy.attachments a WHERE a.name = %(a)s)::regrole"
        " UNION ALL"
        " SELECT f.signature || ' may be run by '"
        "  || CASE x.grantee WHEN 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END"
        " FROM economy.attached_functions(%(a)s) f"
        " JOIN pg_catalog.pg_proc p ON p.oid = to_regprocedure(f.signature)"
        " CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x"
        " WHERE x.grantee <> p.proowner"
        "  AND x.grantee IS DISTINCT FROM to_regrole(f.granted_to)",
        {"a": attachment},
    ).fetchall()
    for (problem,) in altered:
        yield Finding(False, f"{problem}: SELECT economy.reattach('{attachment}')")
    if not altered:
        yield Finding(True, f"{attachment}: its triggers run its own functions, as its sync role")


def check_mapped_columns(conn, attachment: str) -> Iterator[Finding]:
    """Every column the attachment maps is still there by its name: a migration of
    the app that renamed or dropped one breaks the sync until reattach."""
    gone = conn.execute(
        "SELECT m.argument, m.tbl::text, m.col"
        " FROM economy.mapped_columns(economy.attachment(%s)) m"
        " WHERE economy.column_type(m.tbl, m.col) IS NULL",
        [attachment],
    ).fetchall()
    for argument, table, column in gone:
        yield Finding(
            False,
            f"{attachment}: {argument} {column} is no column of {table} any more (renamed or"
            f" dropped by a migration?): SELECT economy.reattach('{attachment}')",
        )
    if not gone:
        yield Finding(True, f"{attachment}: every mapped column is there")


def check_sync_role_objects(conn, attachment: str) -> Iterator[Finding]:
    """What the attachment's sync role owns in this database besides its
    functions in schema economy: made by code the app's tables' owner runs as
    it (its `earning` function, its triggers), a back door that runs as the
    sync role (it may write the cached columns) whenever it is called."""
    owned = conn.execute(
        "SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)"
        " FROM pg_catalog.pg_shdepend d"
        " JOIN pg_catalog.pg_database b ON b.oid = d.dbid AND b.datname = current_database()"
        " WHERE d.deptype = 'o' AND d.refclassid = 'pg_catalog.pg_authid'::regclass"
        "  AND d.refobjid = (SELECT a.sync_role FROM economy.attachments a"
        "   WHERE a.name = %s)::regrole"
        "  AND NOT (d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid IN ("
        "   SELECT p.oid FROM pg_catalog.pg_proc p"
        "   WHERE p.pronamespace = 'economy'::regnamespace))"
        " ORDER BY 1",
        [attachment],
    ).fetchall()
    for (what,) in owned:
        yield Finding(
            False,
            f"{attachment}: its sync role owns {what}, which runs with its rights (made by"
            " code the app's tables' owner supplies): drop it, then"
            f" `economy-sync reconcile --attachment {attachment} --apply --all`",
        )
    if not owned:
        yield Finding(True, f"{attachment}: its sync role owns nothing but its functions")


def check_replication_role(conn) -> Iterator[Finding]:
    if one(conn, "SELECT current_setting('session_replication_role')") != "origin":
        yield Finding(False, "this session's session_replication_role skips the sync triggers")
    skipping = conn.execute(
        "SELECT coalesce(r.rolname, 'every role'), coalesce(d.datname, 'every database')"
        " FROM pg_catalog.pg_db_role_setting s"
        " LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole"
        " LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase"
        " WHERE s.setdatabase IN"
        "  (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))"
        " AND EXISTS (SELECT FROM unnest(s.setconfig) c"
        "  WHERE split_part(c, '=', 1) = 'session_replication_role'"
        "  AND split_part(c, '=', 2) <> 'origin')"
    ).fetchall()
    for role, database in skipping:
        yield Finding(
            False,
            f"session_replication_role is set for {role} in {database}: their inserts skip the"
            " sync triggers; ALTER ROLE ... / ALTER DATABASE ... RESET session_replication_role",
        )
    if not skipping:
        yield Finding(
            True, "no role or database defaults session_replication_role to skip triggers"
        )


def check_roles(conn) -> Iterator[Finding]:
    present = {
        row[0]
        for row in conn.execute(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", [list(ROLES)]
        )
    }
    for role in ROLES:
        if role not in present:
            yield Finding(
                False, f"role {role} is missing: run `economy-sync migrate` as a CREATEROLE user"
            )
    if present != set(ROLES):
        return
    wrong = []
    for role in ROLES:
        for function in APP_FUNCTIONS:
            if not one(conn, "SELECT has_function_privilege(%s, %s, 'EXECUTE')", [role, function]):
                wrong.append(f"{role} cannot EXECUTE {function}")
        for table in CACHE_TABLES:
            if one(conn, "SELECT has_table_privilege(%s, %s, 'UPDATE')", [role, table]):
                wrong.append(f"{role} can UPDATE {table}")
        for action in ("UPDATE", "DELETE", "TRUNCATE"):
            if one(conn, "SELECT has_table_privilege(%s, %s, %s)", [role, LEDGER, action]):
                wrong.append(f"{role} can {action} {LEDGER}")
        for column in DATABASE_COLUMNS:
            if one(
                conn, "SELECT has_column_privilege(%s, %s, %s, 'INSERT')", [role, LEDGER, column]
            ):
                wrong.append(f"{role} can choose {LEDGER}.{column}")
    if not one(conn, "SELECT has_function_privilege('economy_app', %s, 'EXECUTE')", [RECONCILE]):
        wrong.append("economy_app cannot run a dry-run reconcile_economy")
    if one(conn, "SELECT has_function_privilege('economy_app', %s, 'EXECUTE')", [REPAIR]):
        wrong.append("economy_app can repair (repair_economy)")
    if not one(conn, "SELECT has_function_privilege('economy_operator', %s, 'EXECUTE')", [REPAIR]):
        wrong.append("economy_operator cannot repair (repair_economy)")
    for problem in wrong:
        yield Finding(
            False, f"grant not as designed: {problem}; reinstall the grants (sql/40_roles.sql)"
        )
    if not wrong:
        yield Finding(True, "roles economy_app and economy_operator granted as designed")


def check_drift(conn, names: list[str]) -> Iterator[Finding]:
    """Each attachment's drifted fields, counted in SQL (no drifted row is
    fetched), each in a savepoint of its own: one whose check fails (a column a
    migration renamed) is said, and the others are still checked."""
    drifted = Counter()
    for name in names:
        try:
            with conn.transaction():
                drifted[name] = one(
                    conn,
                    "SELECT count(*) FROM economy.balance_drift(attachment => %s)",
                    [name],
                )
        except psycopg.errors.InsufficientPrivilege:
            yield Finding(False, "cannot read drift: run doctor as a member of economy_app")
            return
        except psycopg.errors.UndefinedObject:
            continue  # said by check_triggers
        except psycopg.Error as error:
            yield Finding(False, f"{name}: its drift check fails: {first_line(error)}")
    for name, count in drifted.items():
        if count:
            yield Finding(
                False,
                f"{name}: {count} cached {'field disagrees' if count == 1 else 'fields disagree'}"
                " with the ledger: `economy-sync reconcile --dry-run` to see them,"
                f" `--apply --all` to repair",
            )
    if drifted and not sum(drifted.values()):
        yield Finding(True, "no drift: every cached balance equals the ledger")


OVERDUE_HOLDS = """
SELECT 'economy', count(*) FROM economy.wallet_hold h
WHERE h.status = 'held' AND h.expires_at <= now()
UNION ALL
SELECT h.attachment, count(*) FROM economy.attached_hold h
WHERE h.status = 'held' AND h.expires_at <= now()
GROUP BY h.attachment
"""


def check_holds(conn, names: list[str]) -> Iterator[Finding]:
    overdue = {
        name: count for name, count in conn.execute(OVERDUE_HOLDS) if name in names and count
    }
    for name, count in overdue.items():
        yield Finding(
            False,
            f"{name}: {count} holds are past their expiry and still count against their"
            " wallets: `economy-sync holds expire` (schedule it)",
        )
    if not overdue:
        yield Finding(True, "no hold past its expiry")


def check_checkpoint(conn, attachment: str) -> Iterator[Finding]:
    """An attachment's ledger checkpoint: none (no id sequence), or void since
    DDL changed the ledger (the sync switched off, a reattach, a column
    altered): drift checks then sum the whole ledger until the next advance."""
    if not api.has_checkpoint(conn, attachment):
        yield Finding(
            True,
            f"{attachment}: no ledger checkpoint (its ledger has no integer id with a"
            " sequence and NOT NULL): drift checks sum the whole ledger",
        )
    elif one(
        conn,
        "SELECT h.checkpointed_up_to IS NOT NULL"
        " AND economy.trusted_checkpoint(h.attachment) IS NULL"
        " FROM economy.attached_ledger_horizon h WHERE h.attachment = %s",
        [attachment],
    ):
        yield Finding(
            True,
            f"{attachment}: the ledger checkpoint is void (DDL changed the ledger since its last"
            " advance: the sync switched off, a reattach, a column altered); drift checks sum"
            " the whole ledger"
            f" until `CALL economy.checkpoint_ledger(attachment => '{attachment}')`",
        )


def attachment_findings(conn: psycopg.Connection, name: str) -> Iterator[Finding]:
    """What doctor checks of one attachment's sync: its triggers, and for an
    app's tables its mapped columns, its generated functions, its sync role and
    its checkpoint."""
    yield from check_triggers(conn, name)
    if not api.own_tables(name):
        yield from check_mapped_columns(conn, name)
        yield from check_generated_functions(conn, name)
        yield from check_sync_role_objects(conn, name)
        yield from check_checkpoint(conn, name)


def findings(conn: psycopg.Connection, attachment: str | None = None) -> list[Finding]:
    """Every finding, in a read-only transaction: doctor never writes."""
    results = []
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        if not one(conn, "SELECT to_regnamespace('economy') IS NOT NULL"):
            return list(check_schema(conn))
        results.extend(check_schema(conn))
        names = [attachment] if attachment else api.attachments(conn)
        for name in names:
            results.extend(attachment_findings(conn, name))
        results.extend(check_replication_role(conn))
        results.extend(check_roles(conn))
        results.extend(check_drift(conn, names))
        results.extend(check_holds(conn, names))
    return results


def run_doctor(
    conn: psycopg.Connection, out: Console, attachment: str | None = None, as_json: bool = False
) -> int:
    results = findings(conn, attachment)
    healthy = all(finding.ok for finding in results)
    if as_json:
        print(json.dumps({"ok": healthy, "findings": [asdict(finding) for finding in results]}))
    else:
        for finding in results:
            mark = "[green]ok[/]     " if finding.ok else "[red]PROBLEM[/]"
            out.print(f"{mark} {escape(finding.message)}", highlight=False, soft_wrap=True)
    return 0 if healthy else 1
