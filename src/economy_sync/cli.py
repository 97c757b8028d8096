"""The `economy-sync` command.

Exit codes: 0 all good; 1 drift found (drift, reconcile --dry-run), a doctor
finding or a failed audit; 2 usage, connection, installation or privilege error;
3 reconcile --apply skipped batches (lock timeouts or deadlocks) or could not
advance the ledger checkpoint: run it again; 130 interrupted.
"""

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from importlib.metadata import version as package_version

import psycopg
import sqlalchemy.exc
from rich.console import Console

from economy_sync import api, migrate, roles
from economy_sync.console import (
    drift_table,
    print_counts,
    print_rows,
    row_json,
    run_reconcile,
)
from economy_sync.doctor import RECONCILE
from economy_sync.errors import CliError, first_line

EXIT_OK, EXIT_DRIFT, EXIT_ERROR, EXIT_INCOMPLETE = 0, 1, 2, 3


AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def age(text: str) -> timedelta:
    """90d, 12h, 30m, 45s or 2w as a timedelta."""
    found = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number and a unit (s, m, h, d, w): 90d")
    return timedelta(**{AGE_UNITS[found.group(2)]: int(found.group(1))})


class ShowVersion(argparse.Action):
    """The package and its schema revision; then, when a database is given (--dsn
    before --version, or DATABASE_URL), the revision that database is at."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"economy-sync {package_version('economy-sync')}"
            f" (schema revision {migrate.head_revision()})"
        )
        dsn = database_dsn(namespace)
        if dsn:
            from economy_sync.doctor import schema_installed_at

            try:
                with psycopg.connect(dsn, connect_timeout=5) as conn:
                    found = schema_installed_at(conn) or "none (run `economy-sync migrate`)"
            except psycopg.Error as error:
                found = f"unknown: {first_line(error)}"
            print(f"database: schema revision {found}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--dsn",
        default=argparse.SUPPRESS,
        help="libpq connection string or URL (default: $DATABASE_URL)",
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="machine-readable output")
    attached = argparse.ArgumentParser(add_help=False)
    attached.add_argument(
        "--attachment",
        metavar="NAME",
        help="only this attachment (economy.attachments; economy: the package's own tables);"
        " default: every one",
    )

    parser = argparse.ArgumentParser(
        prog="economy-sync",
        description="Keep cached balances in sync with the ledger, inside PostgreSQL.",
        epilog="exit codes: 0 ok, 1 drift found, 2 usage/connection/installation/privilege"
        " error, 3 reconcile skipped some work (run it again), 130 interrupted",
        parents=[database],
    )
    parser.add_argument(
        "--version", action=ShowVersion, nargs=0, help="the package's and the database's revision"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("migrate", parents=[database], help="install or upgrade the schema")
    drift = commands.add_parser(
        "drift", parents=[database, output, attached], help="list drifted caches"
    )
    drift.add_argument("--user-id", type=int, action="append", dest="user_ids", metavar="N")
    shown = drift.add_mutually_exclusive_group()
    shown.add_argument(
        "--limit", type=positive_int, default=1000, metavar="N", help="rows shown (default 1000)"
    )
    shown.add_argument("--all", dest="limit", action="store_const", const=None, help="every row")

    rec = commands.add_parser(
        "reconcile",
        parents=[database, output, attached],
        help="find (default) or repair drift, in batches",
    )
    mode = rec.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="apply", action="store_false", help="report only (default)")
    mode.add_argument("--apply", dest="apply", action="store_true", help="repair, logged")
    rec.set_defaults(apply=False)
    scope = rec.add_mutually_exclusive_group()
    scope.add_argument("--user-id", type=int, action="append", dest="user_ids", metavar="N")
    scope.add_argument("--all", action="store_true", help="every user (default for --dry-run)")
    rec.add_argument("--batch-size", type=positive_int, default=1000, metavar="N")
    rec.add_argument("--limit", type=positive_int, default=None, metavar="N", help="users at most")

    commands.add_parser(
        "demo", parents=[database], help="the whole story on a throwaway PostgreSQL"
    )
    commands.add_parser(
        "doctor", parents=[database, attached, output], help="check an installation, read-only"
    )
    commands.add_parser(
        "metrics",
        parents=[database, attached],
        help="the figures to alert on, in Prometheus text format",
    )
    holds = commands.add_parser(
        "holds", parents=[database, attached], help="holds: expire (for a scheduler)"
    )
    holds.add_argument("action", choices=["expire"], help="mark holds past their expiry expired")
    prune = commands.add_parser(
        "prune-log", parents=[database], help="delete old reconcile_log rows (retention)"
    )
    prune.add_argument(
        "--older-than",
        required=True,
        type=age,
        metavar="AGE",
        help="e.g. 90d, 12h, 30m: delete the fixes logged longer ago",
    )
    prune_keys = commands.add_parser(
        "prune-keys",
        parents=[database],
        help="delete the keys of old transfer_many calls (retention)",
    )
    prune_keys.add_argument(
        "--older-than",
        required=True,
        type=age,
        metavar="AGE",
        help="e.g. 30d: delete the keys of calls made longer ago (a retry with one transfers"
        " again: keep them longer than any client retries)",
    )
    hot = commands.add_parser(
        "hot", parents=[database, attached], help="hot wallets: fold (for a scheduler)"
    )
    hot.add_argument(
        "action", choices=["fold"], help="fold the credits parked on hot wallets into their caches"
    )
    roles = commands.add_parser(
        "roles",
        parents=[database],
        help="print the SQL an administrator runs to make the package's roles for an installer"
        " that may not create them (hosted PostgreSQL)",
    )
    roles.add_argument("--sql", action="store_true", required=True, help="print the recipe")
    roles.add_argument(
        "--installer", metavar="ROLE", help="the role that installs (default: --dsn's user)"
    )
    roles.add_argument(
        "--attachment",
        metavar="NAME",
        action="append",
        default=[],
        help="also the sync role of this attachment (needs --dsn: the database it is in)",
    )
    commands.add_parser(
        "audit",
        parents=[database, output, attached],
        help="check the ledger checkpoint against a full sum of the ledger (reads it all)",
    )
    return parser


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def database_dsn(args) -> str | None:
    dsn = getattr(args, "dsn", None) or os.environ.get("DATABASE_URL") or None
    # SQLAlchemy's form (postgresql+psycopg://…), as alembic users keep it, is a libpq URL
    return re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", dsn) if dsn else None


def required_dsn(args) -> str:
    dsn = database_dsn(args)
    if not dsn:
        raise CliError("no database: pass --dsn or set DATABASE_URL (postgresql://user@host/db)")
    return dsn


@contextmanager
def connected(dsn: str, need_schema: bool = True) -> Iterator[psycopg.Connection]:
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as error:
        raise CliError(
            f"cannot connect to the database: {first_line(error)} (check --dsn / DATABASE_URL)"
        ) from None
    with conn:
        if need_schema and not schema_installed(conn):
            raise CliError(
                "schema economy is not installed in this database: run `economy-sync migrate`"
            )
        yield conn


def schema_installed(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", [RECONCILE]).fetchone()[0]


def cmd_migrate(args, out: Console) -> int:
    dsn = required_dsn(args)
    with connected(dsn, need_schema=False):
        pass  # one clear line if the database cannot be reached
    try:
        migrate.upgrade(dsn)
    except sqlalchemy.exc.DBAPIError as error:  # alembic's wrapper: psycopg's error, one line
        raise error.orig from None
    out.print(f"schema economy is at revision {migrate.head_revision()}")
    return EXIT_OK


def cmd_roles(args, out: Console) -> int:
    dsn = database_dsn(args)
    if not dsn and (args.attachment or not args.installer):
        raise CliError("pass --installer ROLE, and --dsn (or DATABASE_URL) for --attachment")
    sync_roles, installer = {}, args.installer
    if dsn:
        with connected(dsn, need_schema=False) as conn:
            installer = installer or conn.info.user
            sync_roles = {name: api.sync_role_name(conn, name) for name in args.attachment}
    try:
        print(roles.recipe(installer, sync_roles), end="")
    except ValueError as error:
        raise CliError(str(error)) from None
    return EXIT_OK


def in_scope(conn: psycopg.Connection, args) -> list[str]:
    """The attachments a command covers: --attachment, else every one."""
    return [args.attachment] if args.attachment else api.attachments(conn)


def cmd_drift(args, out: Console) -> int:
    """The drifted fields, read as they stream: at most --limit kept to show, the
    rest only counted (memory stays bounded however many drifted)."""
    shown, count = [], 0
    with connected(required_dsn(args)) as conn:
        for name in in_scope(conn, args):
            for row in api.stream_balance_drift(conn, args.user_ids, name):
                count += 1
                if args.limit is None or len(shown) < args.limit:
                    shown.append((name, row))
    omitted = count - len(shown)
    args.exit_code = EXIT_DRIFT if count else EXIT_OK  # kept if the reader goes away
    if args.json:
        drift = [{"attachment": name} | row_json(row) for name, row in shown]
        print(json.dumps({"count": count, "omitted": omitted, "drift": drift}))
        return EXIT_DRIFT if count else EXIT_OK
    for name in dict.fromkeys(name for name, _ in shown):
        rows = [row for of, row in shown if of == name]
        fields = "cached field disagrees" if len(rows) == 1 else "cached fields disagree"
        out.print(drift_table(rows, f"{name}: {len(rows)} {fields} with the ledger"))
    if omitted:
        out.print(f"... and {omitted} more (--all shows every row); {count} in all")
    if not count:
        out.print("No drift: every cached balance equals the ledger.")
    return EXIT_DRIFT if count else EXIT_OK


def cmd_reconcile(args, out: Console) -> int:
    if args.apply and not (args.all or args.user_ids):
        raise CliError("--apply needs a scope: --all or --user-id N")
    summary = api.ReconcileSummary(dry_run=not args.apply)
    row_attachments = []  # the attachment of each row of summary.rows
    try:
        with connected(required_dsn(args)) as conn:
            for name in in_scope(conn, args):  # one run: one run_id for them all
                run_reconcile(
                    conn,
                    dry_run=not args.apply,
                    user_ids=args.user_ids,
                    batch_size=args.batch_size,
                    limit=args.limit,
                    show_progress=not args.json,
                    attachment=name,
                    into=summary,
                )
                row_attachments += [name] * (len(summary.rows) - len(row_attachments))
    except KeyboardInterrupt:
        # every batch is its own transaction: say what the finished ones did
        print_counts(summary, Console(stderr=True))
        raise
    if args.json:
        document = asdict(summary)
        document["rows"] = [
            {"attachment": name} | row_json(row)
            for name, row in zip(row_attachments, summary.rows, strict=True)
        ]
        print(json.dumps(document))
    else:
        print_rows(summary, out)
        print_counts(summary, out)
    if summary.checkpoint_skipped:
        print(
            "economy-sync: the ledger checkpoint was not advanced (inserts in flight held the"
            " ledger too long): drift checks stay exact but slower; run again",
            file=sys.stderr,
        )
    if summary.errors or summary.checkpoint_skipped:
        return EXIT_INCOMPLETE
    return EXIT_DRIFT if summary.dry_run and summary.drift_found else EXIT_OK


def cmd_metrics(args, out: Console) -> int:
    from economy_sync.metrics import collect

    with connected(required_dsn(args)) as conn, conn.transaction():
        sys.stdout.write(collect(conn, args.attachment).decode())
    return EXIT_OK


def cmd_holds(args, out: Console) -> int:
    with connected(required_dsn(args)) as conn:
        names = [args.attachment] if args.attachment else api.attachments(conn, keeping_holds=True)
        expired = {name: api.expire_holds(conn, name) for name in names}
    out.print(f"Expired holds: {sum(expired.values())}")
    if len(expired) > 1:
        for name, count in expired.items():
            out.print(f"  {name}: {count}")
    return EXIT_OK


def cmd_prune_keys(args, out: Console) -> int:
    with connected(required_dsn(args)) as conn:
        pruned = api.prune_transfer_keys(conn, args.older_than)
    out.print(f"Pruned transfer_many keys: {pruned}")
    return EXIT_OK


def cmd_prune_log(args, out: Console) -> int:
    with connected(required_dsn(args)) as conn:
        pruned = api.prune_reconcile_log(conn, args.older_than)
    out.print(f"Pruned reconcile_log rows: {pruned}")
    return EXIT_OK


def cmd_hot(args, out: Console) -> int:
    with connected(required_dsn(args)) as conn:
        folded = sum(api.fold_hot_wallets(conn, name) for name in in_scope(conn, args))
    out.print(f"Hot wallets folded: {folded}")
    return EXIT_OK


def cmd_audit(args, out: Console) -> int:
    with connected(required_dsn(args)) as conn:
        mismatches = [
            (name, row)
            for name in in_scope(conn, args)
            for row in api.audit_ledger_checkpoint(conn, name)
        ]
    if args.json:
        rows = [{"attachment": name, **row_json(row)} for name, row in mismatches]
        print(json.dumps({"count": len(mismatches), "mismatches": rows}))
    elif mismatches:
        for name, row in mismatches:
            out.print(
                f"{name}: wallet {row.wallet_id} {row.field}: checkpoint {row.checkpoint_value},"
                f" ledger {row.ledger_value}"
            )
        out.print(
            "The checkpoint disagrees with the ledger: as economy_operator,"
            " SELECT economy.reset_ledger_checkpoint(attachment => …);"
            " then reconcile --apply --all"
        )
    else:
        out.print("The ledger checkpoint equals a full sum of the ledger.")
    return EXIT_DRIFT if mismatches else EXIT_OK


def cmd_demo(args, out: Console) -> int:
    try:
        from economy_sync.demo import run_demo
    except ModuleNotFoundError as missing:  # the demo's throwaway server is an extra
        raise CliError(
            f"the demo needs {missing.name}: pip install 'economy-sync[demo]'"
            " (scripts/demo installs it)"
        ) from None
    # only a database named on the command line: the demo writes entries that can
    # never be deleted, so DATABASE_URL (exported for the other commands) is not enough
    explicit = getattr(args, "dsn", None)
    if not explicit and os.environ.get("DATABASE_URL"):
        out.print(
            "DATABASE_URL is left alone: the demo runs on a throwaway server (--dsn to choose)"
        )
    return run_demo(explicit and database_dsn(args), out)


def cmd_doctor(args, out: Console) -> int:
    from economy_sync.doctor import run_doctor

    with connected(required_dsn(args), need_schema=False) as conn:
        return run_doctor(conn, out, args.attachment, args.json)


COMMANDS = {
    "migrate": cmd_migrate,
    "drift": cmd_drift,
    "reconcile": cmd_reconcile,
    "demo": cmd_demo,
    "doctor": cmd_doctor,
    "audit": cmd_audit,
    "holds": cmd_holds,
    "hot": cmd_hot,
    "prune-log": cmd_prune_log,
    "prune-keys": cmd_prune_keys,
    "metrics": cmd_metrics,
    "roles": cmd_roles,
}


def role_needed(args) -> str:
    """The package role a command needs (its members may run it)."""
    if args.command == "migrate":
        return roles.INSTALL_NEEDS
    operator_commands = ("prune-log", "prune-keys", "hot")
    if (args.command == "reconcile" and args.apply) or args.command in operator_commands:
        return "a member of economy_operator"
    return "a member of economy_app"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Console()
    try:
        return COMMANDS[args.command](args, out)
    except CliError as error:
        print(f"economy-sync: {error}", file=sys.stderr)
        return EXIT_ERROR
    except psycopg.errors.InsufficientPrivilege as error:
        print(f"economy-sync: {first_line(error)}: run it as {role_needed(args)}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # the reader went away (`economy-sync drift --json | head`): not an error; the
        # exit status is what the command found (drift: 1), if it got that far
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return getattr(args, "exit_code", EXIT_OK)
    except psycopg.Error as error:
        print(f"economy-sync: database error: {first_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("economy-sync: interrupted (safe to run again)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
