"""`manage.py reconcile_economy`: the `economy-sync reconcile` command on the
default database, with its exit codes (0 done, 1 drift found in a dry run,
2 usage/connection error, 3 skipped batches: run it again)."""

import sys

from django.core.management.base import BaseCommand
from django.db import connections

from economy_sync.cli import main as economy_sync
from economy_sync.django.dsn import connection_dsn


class Command(BaseCommand):
    help = "Find (--dry-run) or repair drift between the cached balances and the ledger."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="report only")
        parser.add_argument("--user-id", type=int, action="append", dest="user_ids")
        parser.add_argument("--all", action="store_true", help="every user")
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--limit", type=int)
        parser.add_argument("--attachment", help="an attachment's name (economy.attachments)")
        parser.add_argument("--json", action="store_true")
        parser.add_argument("--database", default="default")

    def handle(self, *args, **options):
        argv = ["--dsn", connection_dsn(connections[options["database"]]), "reconcile"]
        argv.append("--dry-run" if options["dry_run"] else "--apply")
        if options["all"]:
            argv.append("--all")
        for user_id in options["user_ids"] or []:
            argv += ["--user-id", str(user_id)]
        argv += ["--batch-size", str(options["batch_size"])]
        if options["limit"] is not None:
            argv += ["--limit", str(options["limit"])]
        if options["attachment"]:
            argv += ["--attachment", options["attachment"]]
        if options["json"]:
            argv.append("--json")
        code = economy_sync(argv)
        if code:
            sys.exit(code)
