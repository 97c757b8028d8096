"""The roles recipe: the SQL an administrator runs once so that a role that
may not create roles (or, on PostgreSQL 16+, may not grant roles it did not
create) can install economy-sync and attach its tables. Printed by
`economy-sync roles --sql`."""

import re

from psycopg import sql

# economy.attach's rule for names
ATTACHMENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")

# what a privilege error while installing or attaching needs, said once for
# the command line and Django's migrate
INSTALL_NEEDS = (
    "the owner of the database, with CREATEROLE for the first install in a cluster;"
    " else an administrator makes the package's roles for it:"
    " `economy-sync roles --sql --installer ROLE` prints what to run"
)
REMOVE_NEEDS = (
    "a role with CREATEROLE and (on 16+) ADMIN OPTION on economy_app and economy_operator:"
    " removing the package drops its roles when no other database uses them"
)
ATTACH_NEEDS = (
    "the role that installed the package, owning the app's tables or a member of their"
    " owner, with CREATEROLE; else a superuser makes the attachment's role:"
    " `economy-sync roles --sql --attachment NAME` prints what to run"
)

HEADER = """\
-- economy-sync's roles, made by an administrator (a superuser, or a role with
-- CREATEROLE that may grant them; an attachment's role: a superuser, as any
-- other role keeps ADMIN OPTION on it on PostgreSQL 16+) for the installer {installer}.
-- Safe to run again, but for an attachment's role (one that exists already is
-- an error: who made it?). Nothing here is needed when the installer has CREATEROLE
-- and the roles do not exist yet (it then creates them itself).
"""

CREATE = """\
DO $recipe$
BEGIN
    CREATE ROLE {role} NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END;
$recipe$;
"""

PACKAGE_ROLES = """\
GRANT economy_app TO economy_operator;
-- Each install grants that membership again, which PostgreSQL allows only with
-- ADMIN OPTION; with it the installer also grants the roles to your logins and
-- removes them with the package. It gets nothing else of them (on 16+ neither
-- their privileges nor SET ROLE).
DO $recipe$
BEGIN
    IF current_setting('server_version_num')::int >= 160000 THEN
        EXECUTE format('GRANT economy_app, economy_operator TO %I'
            ' WITH ADMIN OPTION, INHERIT FALSE, SET FALSE', {installer_literal});
    ELSE
        EXECUTE format('GRANT economy_app, economy_operator TO %I WITH ADMIN OPTION',
            {installer_literal});
    END IF;
END;
$recipe$;
"""

# made here, never taken as found: one that exists already (made by whom?) is an error
SYNC_ROLE = """\
-- attachment {attachment}: its sync role owns the code the sync runs; the
-- installer gives it that code and takes it back
CREATE ROLE {role} NOLOGIN;
GRANT {role} TO {installer};
"""


def recipe(installer: str, sync_roles: dict[str, str] | None = None) -> str:
    """The recipe for installer; sync_roles: attachment name -> its sync role
    (economy.sync_role_name), for an installer without CREATEROLE."""
    # names are quoted, but also said in comments, and the DO blocks are $recipe$-quoted
    if not installer or re.search(r"[\x00-\x1f\x7f$]", installer):
        raise ValueError(f"not a usable installer name: {installer!r}")
    for attachment in sync_roles or {}:
        if not ATTACHMENT_NAME.fullmatch(attachment):
            raise ValueError(f"not an attachment name ([a-z][a-z0-9_]*): {attachment!r}")
    names = {"installer": sql.Identifier(installer), "installer_literal": sql.Literal(installer)}
    parts = [sql.SQL(HEADER).format(**names)]
    for role in ("economy_app", "economy_operator"):
        parts.append(sql.SQL(CREATE).format(role=sql.Identifier(role)))
    parts.append(sql.SQL(PACKAGE_ROLES).format(**names))
    for attachment, role in (sync_roles or {}).items():
        parts.append(
            sql.SQL(SYNC_ROLE).format(
                attachment=sql.Literal(attachment), role=sql.Identifier(role), **names
            )
        )
    return "\n".join(part.as_string(None) for part in parts)
